"""Build "real-sounds": a small labelled set of *real recordings* from Debian's packages.

    python bench/real_sounds.py data/real-sounds        # apt-get download + extract, then labels.csv
    tagger eval data/real-sounds/labels.csv --model efficientat-mn04

Renders are the only labelled music we can make in quantity, and real-dev (../shared) is
for evaluation only. This set is the one labelled real audio that the package registries
give: the instrument samples, loops and phrases that LMMS (lmms-common) and Sonic Pi
(sonic-pi-samples, CC0, freesound) ship, labelled by their file names. They are single notes,
chords, short phrases and drum loops, mostly solo; a few non-instrument sounds (applause,
breath, a crowd, vinyl hiss, a choir) carry no label, so false alarms count too. Nothing
that real-dev holds is here: Sonic Pi's two amen-break loops are left out (real-dev has one),
and no file of these packages comes from real-dev's sources.

Only sounds whose name says the instrument without doubt are kept (LMMS's "steel"
guitars, which may be lap steels, synth basses, tabla, pads named after no synth are not),
and sounds shorter than 0.5 s are skipped. The audio stays where the packages put it,
outside the repository.
"""
from __future__ import annotations

import argparse
import csv
import subprocess
import sys
from pathlib import Path

import soundfile as sf

LMMS = ("lmms-common", "usr/share/lmms/samples", "Debian lmms-common (LMMS sample library, GPL-2+)")
SONIC_PI = ("sonic-pi-samples", "usr/share/sonic-pi/samples", "Debian sonic-pi-samples (freesound, CC0)")
MIN_SECONDS = 0.5

# (package, file under its sample folder, labels): declared once, labels from the names.
SOUNDS: tuple[tuple[tuple[str, str, str], str, str], ...] = (
    (LMMS, "instruments/bassslap02.ogg", "bass"),
    (LMMS, "instruments/cello01.ogg", "cello"),
    (LMMS, "instruments/church_organ01.ogg", "organ"),
    (LMMS, "instruments/church_organ02.ogg", "organ"),
    (LMMS, "instruments/church_organ03.ogg", "organ"),
    (LMMS, "instruments/church_organ04.ogg", "organ"),
    (LMMS, "instruments/e_organ01.ogg", "organ"),
    (LMMS, "instruments/e_piano_accord01.ogg", "piano"),
    (LMMS, "instruments/e_piano_accord02.ogg", "piano"),
    (LMMS, "instruments/flute01.ogg", "flute"),
    (LMMS, "instruments/piano01.ogg", "piano"),
    (LMMS, "instruments/piano02.ogg", "piano"),
    (LMMS, "instruments/trumpet01.ogg", "trumpet"),
    (LMMS, "instruments/violin_double_stop01.ogg", "violin"),
    (LMMS, "instruments/violin_fingered01.ogg", "violin"),
    (LMMS, "latin/latin_guitar01.ogg", "acoustic guitar"),
    (LMMS, "latin/latin_guitar02.ogg", "acoustic guitar"),
    (LMMS, "latin/latin_guitar03.ogg", "acoustic guitar"),
    (LMMS, "stringsnpads/strings01.ogg", "strings"),
    (LMMS, "stringsnpads/juno_pad01.ogg", "synth"),
    (LMMS, "stringsnpads/nord_ambient01.ogg", "synth"),
    (LMMS, "stringsnpads/korg_poly6_drone01.ogg", "synth"),
    (LMMS, "bassloops/techno_synth01.ogg", "synth"),
    (LMMS, "bassloops/techno_synth02.ogg", "synth"),
    (LMMS, "bassloops/techno_synth03.ogg", "synth"),
    (LMMS, "bassloops/techno_synth04.ogg", "synth"),
    (LMMS, "beats/909beat01.ogg", "drums"),
    (LMMS, "beats/break01.ogg", "drums"),
    (LMMS, "beats/break02.ogg", "drums"),
    (LMMS, "beats/break03.ogg", "drums"),
    (LMMS, "beats/electro_beat01.ogg", "drums"),
    (LMMS, "beats/electro_beat02.ogg", "drums"),
    (LMMS, "beats/house_loop01.ogg", "drums"),
    (LMMS, "beats/jungle01.ogg", "drums"),
    (LMMS, "misc/applause01.ogg", ""),
    (LMMS, "misc/breath01.ogg", ""),
    (LMMS, "misc/raving_crowd01.ogg", ""),
    (SONIC_PI, "guit_e_fifths.flac", "electric guitar"),
    (SONIC_PI, "guit_e_slide.flac", "electric guitar"),
    (SONIC_PI, "guit_em9.flac", "electric guitar"),
    (SONIC_PI, "ambi_piano.flac", "piano"),
    (SONIC_PI, "loop_breakbeat.flac", "drums"),
    (SONIC_PI, "loop_compus.flac", "drums"),
    (SONIC_PI, "loop_industrial.flac", "drums"),
    (SONIC_PI, "drum_cymbal_closed.flac", "drums"),
    (SONIC_PI, "drum_cymbal_open.flac", "drums"),
    (SONIC_PI, "drum_heavy_kick.flac", "drums"),
    (SONIC_PI, "drum_roll.flac", "drums"),
    (SONIC_PI, "drum_snare_hard.flac", "drums"),
    (SONIC_PI, "drum_splash_hard.flac", "drums"),
    (SONIC_PI, "drum_tom_mid_hard.flac", "drums"),
    (SONIC_PI, "ambi_choir.flac", ""),
    (SONIC_PI, "misc_crow.flac", ""),
    (SONIC_PI, "vinyl_hiss.flac", ""),
)


def fetch(package: str, root: Path) -> Path:
    """Download a Debian package with apt-get (no install, no root needed) and unpack it."""
    unpacked = root / package
    if unpacked.is_dir():
        return unpacked
    debs = root / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    if not list(debs.glob(f"{package}_*.deb")):
        subprocess.run(["apt-get", "download", package], cwd=debs, check=True)
    deb = sorted(debs.glob(f"{package}_*.deb"))[-1]
    subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True)
    return unpacked


def build(out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for (package, folder, source), name, labels in SOUNDS:
        path = fetch(package, out) / folder / name
        duration = sf.info(str(path)).duration
        if duration < MIN_SECONDS:
            print(f"skipped {name}: {duration:.2f} s", file=sys.stderr)
            continue
        rows.append({"path": str(path.relative_to(out)), "labels": labels, "source": source,
                     "label_basis": "file name", "duration_s": f"{duration:.2f}"})
    with (out / "labels.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="folder for the packages and labels.csv")
    out = parser.parse_args().out
    print(f"{build(out)} sounds in {out / 'labels.csv'}")


if __name__ == "__main__":
    main()
