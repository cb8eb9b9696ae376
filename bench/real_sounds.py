"""Build "real-sounds": a small labelled set of *real recordings* from Debian's packages.

    python bench/real_sounds.py data/real-sounds        # apt-get download + extract, then labels.csv
    tagger eval data/real-sounds/labels.csv --model efficientat-mn04

Renders are the only labelled music we can make in quantity, and real-dev (../shared) is
for evaluation only. This set is the one labelled real audio that the package registries
give: the instrument samples, loops and phrases that LMMS (lmms-common) and Sonic Pi
(sonic-pi-samples, CC0, freesound) ship, and the recordings of GCompris's "instruments"
activity (gcompris-qt-data: one instrument playing a phrase, 5-12 s, packed in a Qt resource
file), labelled by their file names. They are single notes, chords, phrases and drum loops,
mostly solo; a few sounds outside our labels (applause, breath, a crowd, vinyl hiss, a choir,
accordion, banjo, harmonica, harp) carry no label, so false alarms count too. Nothing
that real-dev holds is here: Sonic Pi's two amen-break loops are left out (real-dev has one),
and no file of these packages comes from real-dev's sources.

Only sounds whose name says the instrument without doubt are kept (LMMS's "steel"
guitars, which may be lap steels, synth basses, tabla, pads named after no synth are not;
nor GCompris's hand percussion, bongos to timpani, whose "drums" label is doubtful),
and sounds shorter than 0.5 s are skipped. The audio stays where the packages put it,
outside the repository.
"""
from __future__ import annotations

import argparse
import csv
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import soundfile as sf

LMMS = ("lmms-common", "usr/share/lmms/samples", "Debian lmms-common (LMMS sample library, GPL-2+)")
SONIC_PI = ("sonic-pi-samples", "usr/share/sonic-pi/samples", "Debian sonic-pi-samples (freesound, CC0)")
# GCompris packs each activity's files into a Qt resource file; build() unpacks this one's
# resource folder into "instruments" beside the package's files.
GCOMPRIS = ("gcompris-qt-data", "instruments",
            "Debian gcompris-qt-data (GCompris instruments activity, GPL; drum_kit: freesound, CC Sampling Plus 1.0)")
GCOMPRIS_RCC = ("usr/share/gcompris-qt/rcc/instruments.rcc", "gcompris/src/activities/instruments/resource")
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
    (GCOMPRIS, "cello.ogg", "cello"),
    (GCOMPRIS, "clarinet.ogg", "clarinet"),
    (GCOMPRIS, "electric_guitar.ogg", "electric guitar"),
    (GCOMPRIS, "flute_traversiere.ogg", "flute"),
    (GCOMPRIS, "guitar.ogg", "acoustic guitar"),
    (GCOMPRIS, "organ.ogg", "organ"),
    (GCOMPRIS, "piano.ogg", "piano"),
    (GCOMPRIS, "saxophone.ogg", "saxophone"),
    (GCOMPRIS, "trumpet.ogg", "trumpet"),
    (GCOMPRIS, "violin.ogg", "violin"),
    (GCOMPRIS, "horn.ogg", "brass"),
    (GCOMPRIS, "trombone.ogg", "brass"),
    (GCOMPRIS, "tuba.ogg", "brass"),
    (GCOMPRIS, "drum_kit.ogg", "drums"),
    (GCOMPRIS, "snare_drum.ogg", "drums"),
    (GCOMPRIS, "cymbal.ogg", "drums"),
    (GCOMPRIS, "accordion.ogg", ""),
    (GCOMPRIS, "banjo.ogg", ""),
    (GCOMPRIS, "harmonica.ogg", ""),
    (GCOMPRIS, "harp.ogg", ""),
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


def unpack_rcc(rcc: Path, folder: str, dest: Path) -> None:
    """Write the files under ``folder`` of a Qt binary resource file (rcc format 1-3) to ``dest``.

    The format: a 20-byte header ("qres", version, then the offsets of the tree, the data and
    the names), a tree of fixed-size entries (name offset, flags, then a directory's child count
    and first child, or a file's locale and data offset), names as UTF-16 with a length, and
    data as 4-byte lengths, zlib-compressed (after a 4-byte size) when flag 1 is set."""
    blob = rcc.read_bytes()
    if blob[:4] != b"qres":
        raise ValueError(f"{rcc}: not a Qt resource file")
    version, tree, data, names = struct.unpack(">IIII", blob[4:20])
    entry_size = 22 if version >= 2 else 14

    def name_at(offset: int) -> str:
        (length,) = struct.unpack(">H", blob[names + offset:names + offset + 2])
        return blob[names + offset + 6:names + offset + 6 + 2 * length].decode("utf-16-be")

    def walk(index: int, path: str) -> None:
        at = tree + index * entry_size
        name_offset, flags = struct.unpack(">IH", blob[at:at + 6])
        path = f"{path}/{name_at(name_offset)}" if index else ""
        if flags & 2:  # a directory
            count, first = struct.unpack(">II", blob[at + 6:at + 14])
            for child in range(first, first + count):
                walk(child, path)
            return
        if not path.lstrip("/").startswith(folder + "/"):
            return
        if ".." in path.split("/"):
            raise ValueError(f"{rcc}: {path} would be written outside {dest}")
        if flags & 4:
            raise ValueError(f"{rcc}: zstd-compressed resources are not supported")
        (offset,) = struct.unpack(">I", blob[at + 10:at + 14])
        (length,) = struct.unpack(">I", blob[data + offset:data + offset + 4])
        payload = blob[data + offset + 4:data + offset + 4 + length]
        target = dest / path.lstrip("/")[len(folder) + 1:]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(zlib.decompress(payload[4:]) if flags & 1 else payload)

    walk(0, "")


def build(out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for (package, folder, source), name, labels in SOUNDS:
        root = fetch(package, out)
        if package == GCOMPRIS[0] and not (root / folder).is_dir():
            unpack_rcc(root / GCOMPRIS_RCC[0], GCOMPRIS_RCC[1], root / folder)
        path = root / folder / name
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
