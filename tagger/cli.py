"""Command line: a thin Click layer over the library (tagger.pipeline, tagger.model, train).

Human output (progress, errors, summary) goes to stderr; report data alone goes to stdout.
"""
from __future__ import annotations

import json
import os
import sys
import tomllib
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from tagger import __version__
from tagger.lifetime import Terminated, stop_on_signals

EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130  # usage errors exit 2 through Click
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a writer whose reader left
EXIT_CODES_HELP = ("Exit codes: 0 all good, 1 some files failed, 2 usage error, 130 interrupted (Ctrl-C), "
                   "143 / 129 stopped by SIGTERM / SIGHUP, 141 the report's reader closed stdout.")
CONFIG_ENV = "TAGGER_CONFIG"

stderr = Console(stderr=True, highlight=False)


def _config_path() -> Path:
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "tagger" / "config.toml"


def _load_default_map() -> dict:
    """Defaults per command from a TOML file, e.g. ``[tag]\\njobs = 4\\ndevice = "cpu"``."""
    path = _config_path()
    if not path.is_file():
        return {}
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise click.UsageError(f"config file {path}: {exc}") from None


def _load_model(path: str | None):
    """A model by name (``tagger models`` lists them) or by path; None: the shipped one."""
    from tagger.catalog import load
    from tagger.model import ModelError

    try:
        return load(path)
    except ModelError as exc:
        raise click.UsageError(str(exc)) from None


class _Group(click.Group):
    def make_context(self, info_name, args, parent=None, **extra):
        extra.setdefault("default_map", _load_default_map())
        return super().make_context(info_name, args, parent=parent, **extra)


@click.group(cls=_Group, context_settings={"auto_envvar_prefix": "TAGGER", "help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tagger")
def main() -> None:
    """Tag music files with the musical instruments that play in them.

    Options can also come from TAGGER_<COMMAND>_<OPTION> environment variables
    (e.g. TAGGER_TAG_JOBS=4) or a TOML config file ($TAGGER_CONFIG, default
    ~/.config/tagger/config.toml) with one table per command.
    """


def _selection_options(fn):
    fn = click.option("--hidden", is_flag=True, help="Also visit hidden files and folders.")(fn)
    fn = click.option("--exclude", multiple=True, metavar="GLOB", help="Skip files matching GLOB (repeatable).")(fn)
    fn = click.option("--include", multiple=True, metavar="GLOB", help="Only files matching GLOB (repeatable).")(fn)
    return fn


def _progress(quiet: bool) -> Progress:
    return Progress(
        TextColumn("[bold]tagging"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[current]}", style="dim"),
        console=stderr,
        disable=quiet,
        transient=False,
    )


def _print_summary(summary, *, interrupted: bool, quiet: bool) -> None:
    if quiet and not summary.failed and not interrupted:
        return
    table = Table(title="tagger summary" + (" (interrupted)" if interrupted else ""), show_header=False)
    table.add_column("status")
    table.add_column("files", justify="right")
    for status, count in sorted(summary.counts.items()):
        table.add_row(status, str(count))
    if interrupted:
        table.add_row("not reached", str(max(0, summary.total - summary.done)))
    table.add_row("audio analysed", f"{summary.audio_seconds / 60:.1f} min")
    speed = summary.audio_seconds / summary.elapsed if summary.elapsed > 0 else 0.0
    table.add_row("time", f"{summary.elapsed:.1f} s ({speed:.0f}x real time)")
    stderr.print(table)


@main.command(epilog=EXIT_CODES_HELP)
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--model", type=click.Path(dir_okay=False), help="Model file (default: the shipped model).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", show_default=True)
@click.option("--jobs", "-j", type=click.IntRange(0), default=2, show_default=True, help="Decoding worker processes (0: decode in the main process).")
@click.option("--batch-size", type=click.IntRange(1), help="Windows per model batch, mixed across tracks (default: 16 on CPU, 256 on CUDA).")
@click.option("--threshold", type=click.FloatRange(0, 1), help="One threshold for every label (default: the model's per-label thresholds).")
@click.option("--aggregation", type=click.Choice(["mean", "max", "topk"]), help="How window scores become a track score (default: the model's).")
@click.option("--topk", type=click.IntRange(1), help="k for --aggregation topk.")
@click.option("--dry-run", "-n", is_flag=True, help="Analyse and report, write nothing to audio files.")
@click.option("--force", "-f", is_flag=True, help="Re-tag files tagged by this model and overwrite person-written INSTRUMENTS tags.")
@click.option("--preserve-mtime", is_flag=True, help="Keep each file's modification time.")
@click.option("--report", metavar="FILE", help="Write a report (- for stdout); format from the extension.")
@click.option("--report-format", type=click.Choice(["csv", "json", "jsonl"]), help="Report format (default: from FILE's extension; jsonl for -).")
@click.option("--timeline", is_flag=True, help="Add per-instrument time segments to JSON/JSONL reports.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar; summary only when something failed.")
@click.option("--verbose", "-v", is_flag=True, help="One line per file, and tracebacks for unexpected errors.")
@click.option("--scheduler", metavar="ADDRESS", help="Run on a Dask cluster (e.g. tcp://host:8786) whose workers see the same paths; --jobs is then unused.")
@_selection_options
def tag(paths, model, device, jobs, batch_size, threshold, aggregation, topk, dry_run, force, preserve_mtime,
        report, report_format, timeline, quiet, verbose, scheduler, include, exclude, hidden) -> None:
    """Analyse audio files under PATHS and write INSTRUMENTS tags."""
    from tagger.infer import pick_device
    from tagger.pipeline import Summary, tag_paths
    from tagger.report import ERROR, open_report

    model_file, report_file = model, report  # option names double as config-file keys
    model = _load_model(model_file)
    try:
        if not scheduler:  # a cluster's workers choose their own device
            pick_device(device)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    run, where = tag_paths, {"jobs": jobs}
    if scheduler:
        from tagger.cluster import ClusterError, connect, tag_paths_on_cluster

        try:
            where = {"client": connect(scheduler)}
        except ClusterError as exc:
            raise click.UsageError(f"--scheduler: {exc}") from None
        run = tag_paths_on_cluster
    report = None
    if report_file:
        try:
            report = open_report(report_file, report_format, model.labels)
        except (ValueError, OSError) as exc:
            raise click.UsageError(f"--report: {exc}") from None
    summary = Summary()
    interrupted: KeyboardInterrupt | None = None
    with _progress(quiet) as progress:
        task = progress.add_task("tagging", total=None, current="")

        def on_start(total: int) -> None:
            progress.update(task, total=total)

        def on_result(result) -> None:
            progress.update(task, advance=1, current=Path(result.path).name[-40:])
            if report:
                report.write(result)
            if result.status == ERROR:
                progress.console.print(f"[red]error[/red]: {result.path}: {result.error}", markup=True, highlight=False, soft_wrap=True)
            elif verbose:
                what = ", ".join(result.instruments) or result.error or "-"
                progress.console.print(f"{result.status}: {result.path}: {what}", markup=False, soft_wrap=True)

        try:
            with stop_on_signals():  # SIGTERM / SIGHUP stop the run like Ctrl-C
                run(
                    paths, **where, model=model, device=device, batch_size=batch_size, dry_run=dry_run, force=force,
                    threshold=threshold, aggregation=aggregation, topk=topk, with_timeline=timeline,
                    preserve_mtime=preserve_mtime, include=include, exclude=exclude, hidden=hidden,
                    on_start=on_start, on_result=on_result, summary=summary,
                )
        except KeyboardInterrupt as exc:  # Ctrl-C, or lifetime.Terminated for SIGTERM / SIGHUP
            interrupted = exc
        except BrokenPipeError:
            progress.stop()
            _stop_on_closed_stdout()
        except Exception as exc:  # a bug, not bad input: say so in one line unless --verbose
            if verbose:
                raise
            progress.stop()
            stderr.print(f"tagger: internal error: {type(exc).__name__}: {exc} (run with --verbose for details)", markup=False)
            sys.exit(EXIT_FAILED)
    if scheduler:
        where["client"].close()
    if report:
        try:
            report.close()
        except BrokenPipeError:
            _stop_on_closed_stdout()
    _print_summary(summary, interrupted=interrupted is not None, quiet=quiet)
    if interrupted is not None:
        why = f"stopped by {interrupted}" if isinstance(interrupted, Terminated) else "interrupted"
        stderr.print(f"{why}: files already tagged keep their tags; the others are unchanged")
        sys.exit(interrupted.exit_code if isinstance(interrupted, Terminated) else EXIT_INTERRUPTED)
    sys.exit(EXIT_FAILED if summary.failed else EXIT_OK)


def _stop_on_closed_stdout() -> None:
    """The report's reader went away (``| head``): stop as a pipe writer does, exit 141."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing more can go there
    stderr.print("tagger: the report's reader closed stdout: stopped; files already tagged keep their tags, "
                 "the others are unchanged", markup=False)
    sys.exit(EXIT_BROKEN_PIPE)


@main.command(epilog=EXIT_CODES_HELP)
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--dry-run", "-n", is_flag=True, help="Say what would be removed, change nothing.")
@click.option("--quiet", "-q", is_flag=True)
@_selection_options
def untag(paths, dry_run, quiet, include, exclude, hidden) -> None:
    """Remove tagger's fields (only where INSTRUMENTS_MODEL shows they are ours)."""
    from tagger.pipeline import untag_paths
    from tagger.report import ERROR

    def on_result(result) -> None:
        if result.status == ERROR:
            stderr.print(f"[red]error[/red]: {result.path}: {result.error}", soft_wrap=True, highlight=False)
        elif not quiet and result.status != "unchanged":
            stderr.print(f"{result.status}: {result.path}", markup=False, soft_wrap=True)

    summary = untag_paths(paths, dry_run=dry_run, include=include, exclude=exclude, hidden=hidden, on_result=on_result)
    if not quiet:
        counts = ", ".join(f"{n} {status}" for status, n in sorted(summary.counts.items())) or "no audio files"
        stderr.print(counts)
    sys.exit(EXIT_FAILED if summary.failed else EXIT_OK)


@main.group(name="models", invoke_without_command=True)
@click.option("--model", type=click.Path(dir_okay=False), help="Model name or file to describe (default: the shipped model).")
@click.option("--json", "as_json", is_flag=True, help="Print the description as JSON on stdout.")
@click.pass_context
def models_cmd(ctx, model, as_json) -> None:
    """List the models (shipped, installed, downloadable) and describe one.

    `tagger models --model NAME|FILE` describes that model only; `tagger models download
    NAME` installs a downloadable model into the user cache.
    """
    if ctx.invoked_subcommand is not None:
        return
    if model is None and not as_json:
        _print_catalog()
    _describe_model(model, as_json)


def _print_catalog() -> None:
    from tagger.catalog import cache_dir, catalog

    table = Table("model", "kind", "status", "what", title="models")
    for row in catalog():
        if row["kind"] == "shipped":
            status = "shipped"
        elif row["installed"]:
            status = "[green]installed[/green]"
        else:
            status = f"not installed ({row['size'] / 1e6:.1f} MB: tagger models download {row['name']})"
        table.add_row(row["name"], row["kind"], status, row["summary"])
    stderr.print(table)
    stderr.print(f"use one with --model NAME (downloads live in {cache_dir()})\n", markup=False)


@models_cmd.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON on stdout.")
def models_list(as_json) -> None:
    """List shipped, installed and downloadable models."""
    from tagger.catalog import catalog

    if as_json:
        click.echo(json.dumps(catalog(), indent=2))
    else:
        _print_catalog()


@models_cmd.command(name="download", epilog="Set TAGGER_MODELS_URL to fetch release files from a mirror.")
@click.argument("name")
@click.option("--from", "source", type=click.Path(exists=True, dir_okay=False), help="Install from a local copy of the release file (offline machines).")
def models_download(name, source) -> None:
    """Download a model (pinned URL and sha256) into the user cache."""
    from rich.progress import DownloadColumn, TransferSpeedColumn

    from tagger.catalog import DOWNLOADS, DownloadError, install

    if name not in DOWNLOADS:
        raise click.UsageError(f"unknown model {name!r} (downloadable: {', '.join(DOWNLOADS)})")
    bar = Progress(TextColumn(f"[bold]{name}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                   TimeRemainingColumn(), console=stderr, transient=True, disable=not stderr.is_terminal)
    try:
        with bar:
            task = bar.add_task("download", total=DOWNLOADS[name].size)
            path = install(name, source=source, progress=lambda done, total: bar.update(task, completed=done, total=total))
    except DownloadError as exc:
        stderr.print(f"tagger: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(EXIT_FAILED)
    except KeyboardInterrupt:
        stderr.print("interrupted: nothing installed")
        sys.exit(EXIT_INTERRUPTED)
    stderr.print(f"installed {name} as {path}; use it with --model {name}", markup=False, highlight=False)


def _describe_model(model, as_json) -> None:
    model = _load_model(model)
    info = {
        "path": model.path,
        "model_id": model.model_id,
        "arch": model.arch,
        "arch_args": model.arch_args,
        "parameters": sum(p.numel() for p in model.network.parameters()),
        "aggregation": model.aggregation,
        "labels": dict(zip(model.labels, model.thresholds)),
        "features": model.features.to_dict(),
        "metrics": model.metrics,
        "training": model.training,
    }
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    stderr.print(f"[bold]{model.model_id}[/bold]  ({model.path})")
    stderr.print(f"architecture {model.arch} {model.arch_args or ''}, {info['parameters']:,} parameters, aggregation {model.aggregation}")
    stderr.print("features " + ", ".join(f"{k}={v}" for k, v in info["features"].items()))
    shown = next((k for k in ("heldout", "test", "validation") if k in model.metrics), None)
    table = Table("label", "threshold", f"{shown or 'test'} F1", f"{shown or 'test'} AP")
    per_class = (model.metrics.get(shown) or {}).get("per_class", {})
    for label, thr in zip(model.labels, model.thresholds):
        m = per_class.get(label, {})
        f1 = f"{m['f1']:.2f}" if m.get("f1") is not None else "-"
        ap = f"{m['ap']:.2f}" if m.get("ap") is not None else "-"
        table.add_row(label, f"{thr:.2f}", f1, ap)
    stderr.print(table)
    for split, m in model.metrics.items():
        if isinstance(m, dict) and "macro_f1" in m:
            stderr.print(f"{split}: macro F1 {m['macro_f1']:.3f}, micro F1 {m['micro_f1']:.3f}, mAP {m.get('map') or 0:.3f}")


@main.command(name="info")
@click.option("--model", type=click.Path(dir_okay=False), help="Model name or file (default: the shipped model).")
@click.option("--json", "as_json", is_flag=True, help="Print the description as JSON on stdout.")
def info_cmd(model, as_json) -> None:
    """Show a model: labels, thresholds, feature settings, metrics."""
    _describe_model(model, as_json)


@main.command()
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--tracks", type=click.IntRange(1, 50), default=6, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def demo(folder, tracks, seed) -> None:
    """Render a demo folder of multi-instrument tracks (mixed formats) to tag."""
    paths = _import_train("train.demo").render_demo(folder, n_tracks=tracks, seed=seed)
    for path in paths:
        click.echo(str(path))
    stderr.print(f"{len(paths)} demo tracks in {folder}; now try: tagger tag {folder}")


def _import_train(module: str):
    """``train`` is a generic top-level name: import it lazily and say clearly when absent."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise click.ClickException(
            f"the training tools are not available ({exc}); install them with: pip install 'tagger[train]'"
        ) from None




def entry() -> None:
    """The ``tagger`` command: the CLI, then an exit that skips tearing down the interpreter's
    modules (torch's take about 0.4 CPU-s, measured), after the atexit handlers and a flush."""
    import atexit
    import threading

    try:
        main()
    except SystemExit as exc:
        code = exc.code
    else:
        code = 0
    if threading.active_count() > 1:  # threads left to join: the ordinary, slower exit
        sys.exit(code)
    if isinstance(code, str):
        print(code, file=sys.stderr)
    code = code if isinstance(code, int) else (0 if code is None else 1)
    atexit._run_exitfuncs()  # what interpreter shutdown would run: finalizers, pool shutdown
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (| head) must not turn into a traceback
            pass
    os._exit(code)


if __name__ == "__main__":
    entry()


def _load_clips(datasets, data_format: str, labels, split: str | None):
    datasets_mod = _import_train("train.datasets")
    clips = []
    for root in datasets:
        try:
            clips += datasets_mod.load_dataset(root, format=data_format, labels=labels, split=split)
        except (ValueError, OSError) as exc:
            raise click.UsageError(f"{root}: {exc}") from None
    if not clips:
        raise click.UsageError("no clips found in " + ", ".join(datasets))
    return clips


def _log(message: str) -> None:
    stderr.print(message, markup=False, highlight=False)


@main.command(name="train")
@click.argument("datasets", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--format", "data_format", type=click.Choice(["auto", "slakh", "irmas", "manifest"]), default="auto", show_default=True)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Checkpoint to write.")
@click.option("--validation-data", multiple=True, type=click.Path(exists=True), help="Validation data (default: a split of DATASETS by track/recording).")
@click.option("--arch", type=click.Choice(["tagnet", "han", "instrunet"]), default="tagnet", show_default=True)
@click.option("--widths", help="Channel widths per stage, e.g. 32,64,128,256 (default: the architecture's).")
@click.option("--labels", "label_set", type=click.Choice(["default", "irmas"]), default=None, help="Label set (default: irmas for IRMAS data, else the GM-derived default).")
@click.option("--epochs", type=click.IntRange(1), default=30, show_default=True)
@click.option("--steps-per-epoch", type=click.IntRange(1), help="Batches per epoch (default: clips / batch size).")
@click.option("--batch-size", type=click.IntRange(2), default=64, show_default=True)
@click.option("--lr", type=float, default=2e-3, show_default=True)
@click.option("--patience", type=click.IntRange(1), default=8, show_default=True, help="Early stopping on validation mAP.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--window-seconds", type=float, default=None, help="Window length (default 3.0).")
@click.option("--hop-seconds", type=float, default=None, help="Hop between windows when tagging and validating (default: the window length).")
@click.option("--name", default="tagger", show_default=True, help="Model name written into tags.")
@click.option("--model-version", default="1", show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", show_default=True)
@click.option("--jobs", "-j", type=click.IntRange(1), default=2, show_default=True, help="Decoding processes.")
@click.option("--resume", is_flag=True, help="Continue from OUT.state after an interruption.")
@click.option("--balance-sources", is_flag=True, help="Draw training windows evenly across sources (font families, datasets) instead of evenly across clips.")
@click.option("--noise", type=click.FloatRange(0, 1), default=0.0, show_default=True, help="Share of training windows given background noise (hiss, room tone) at 10-45 dB below the music.")
@click.option("--tilt", type=click.FloatRange(0, 1), default=0.0, show_default=True, help="Share of training windows given a random treble shelf (-12 to +12 dB from 2-5 kHz): real recordings are brighter or duller than renders.")
@click.option("--init", "init_model", type=click.Path(exists=True, dir_okay=False), help="Start from this model's weights (same architecture, labels, features): fine-tuning.")
@click.option("--teacher", type=click.Choice(["efficientat-mn04"]), help="Teacher model that labels --teacher-audio.")
@click.option("--teacher-weights", type=click.Path(exists=True, dir_okay=False), help="The teacher's weights (mn04_as_mAP_432.pt; default: the installed efficientat-mn04).")
@click.option("--teacher-audio", multiple=True, type=click.Path(exists=True), help="Real, unlabelled audio (files or folders) the teacher labels; repeatable.")
@click.option("--teacher-fraction", type=click.FloatRange(0, 0.9), default=0.25, show_default=True, help="Share of each batch drawn from teacher windows.")
@click.option("--teacher-temperature", type=click.FloatRange(0.05), default=1.0, show_default=True, help="Softens the calibrated teacher targets.")
@click.option("--teacher-classes", type=click.FloatRange(0), default=0.0, show_default=True, help="Weight of an extra loss that has the network's pooled features predict the teacher's scores of all its classes (AudioSet's 527) on the teacher windows, through a head the checkpoint does not keep; 0: off.")
@click.option("--teacher-thresholds", metavar="T1,T2,...", help="The teacher's per-label thresholds (validated on your data) that calibration maps to 0.5 (default: the teacher model's).")
@click.option("--domain-audio", multiple=True, type=click.Path(exists=True), help="Real, unlabelled audio (files or folders) for render-vs-real invariance (domain-adversarial); repeatable.")
@click.option("--domain-fraction", type=click.FloatRange(0.05, 0.5), default=0.25, show_default=True, help="Share of each batch drawn from --domain-audio windows.")
@click.option("--domain-weight", type=click.FloatRange(0), default=0.3, show_default=True, help="Gradient-reversal weight reached at the end of its ramp.")
def train_cmd(datasets, data_format, out, validation_data, arch, widths, label_set, epochs, steps_per_epoch, batch_size,
              lr, patience, seed, window_seconds, hop_seconds, name, model_version, device, jobs, resume,
              balance_sources, noise, tilt, init_model, teacher, teacher_weights, teacher_audio, teacher_fraction, teacher_temperature,
              teacher_classes, teacher_thresholds, domain_audio, domain_fraction, domain_weight) -> None:
    """Train a model on Slakh-layout (rendered or real), IRMAS or manifest data.

    Several DATASETS are trained on together (e.g. SoundFont renders and sample-library
    renders). With --teacher and --teacher-audio, a share of every batch is real audio with
    the teacher's per-label calibrated scores as targets (see train/teacher.py). With
    --domain-audio, a share of every batch is real audio that only a render-vs-real
    discriminator sees, through gradient reversal (see train/domain.py)."""
    loop = _import_train("train.loop")
    taxonomy = _import_train("train.taxonomy")
    from tagger.features import FeatureConfig

    if label_set is None:
        label_set = "irmas" if data_format == "irmas" else "default"
    labels = list(taxonomy.LABELS if label_set == "default" else _import_train("train.datasets").IRMAS_LABELS)
    clips = _load_clips(datasets, data_format, labels, None)
    validation = _load_clips(validation_data, data_format, labels, None) if validation_data else None
    arch_args = {"widths": [int(w) for w in widths.split(",")]} if widths else {}
    config = loop.TrainConfig(
        arch=arch, arch_args=arch_args, epochs=epochs, steps_per_epoch=steps_per_epoch, batch_size=batch_size, lr=lr,
        patience=patience, seed=seed, name=name, version=model_version,
    )
    config.teacher_fraction, config.teacher_classes = teacher_fraction, teacher_classes
    config.balance_sources = balance_sources
    config.noise = noise
    config.tilt = tilt
    config.domain_fraction, config.domain_weight = domain_fraction, domain_weight
    window = window_seconds or FeatureConfig().window_seconds
    features = FeatureConfig(window_seconds=window, hop_seconds=hop_seconds or window)
    teacher_data = None
    if bool(teacher) != bool(teacher_audio):
        raise click.UsageError("--teacher and --teacher-audio go together")
    if teacher_classes and not teacher:
        raise click.UsageError("--teacher-classes needs --teacher and --teacher-audio")
    try:
        if teacher:
            thresholds = [float(t) for t in teacher_thresholds.split(",")] if teacher_thresholds else None
            if thresholds is not None and len(thresholds) != len(labels):
                raise click.UsageError(f"--teacher-thresholds: {len(labels)} values needed")
            teacher_data = _teacher_data(teacher, teacher_weights, teacher_audio, teacher_temperature, labels, features,
                                         thresholds)
        domain_data = None
        if domain_audio:
            domain_data = _import_train("train.domain").real_windows(
                domain_audio, sample_rate=features.sample_rate, window_seconds=features.window_seconds, log=_log)
            _log(f"domain audio: {len(domain_data.windows)} real windows from {domain_data.info['files']} files")
        init = _load_model(init_model) if init_model else None
        loop.train_model(clips, labels, out=out, config=config, features=features, validation_clips=validation,
                         device=device, jobs=jobs, resume=resume, progress=True, log=_log, teacher=teacher_data,
                         init=init, domain=domain_data)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None


def _teacher_data(name, weights, audio, temperature, labels, features, thresholds=None):
    """Real windows and calibrated targets of the teacher ``name`` (cached by train.teacher)."""
    loop, teacher_mod = _import_train("train.loop"), _import_train("train.teacher")
    try:
        if weights is None:  # the installed model (tagger models download efficientat-mn04)
            from tagger import catalog

            teacher = teacher_mod.Mn04Teacher(model=catalog.load(name), thresholds=thresholds)
        else:
            teacher = teacher_mod.Mn04Teacher(weights, thresholds=thresholds)
        windows, probs, _, classes = teacher_mod.teacher_windows(audio, teacher, labels, sample_rate=features.sample_rate,
                                                        window_seconds=features.window_seconds, log=_log)
    except (ValueError, OSError, RuntimeError, ImportError) as exc:
        raise click.UsageError(f"teacher: {exc}") from None
    except Exception as exc:  # ModelError: not installed
        raise click.UsageError(f"teacher: {exc}") from None
    targets = teacher_mod.calibrate(probs, teacher.thresholds, temperature)
    info = {"name": name, "audio": [str(a) for a in audio], "windows": int(len(windows)),
            "thresholds": teacher.thresholds, "temperature": temperature,
            "mean_target": {lab: round(float(v), 3) for lab, v in zip(labels, targets.mean(axis=0))}}
    _log(f"teacher {name}: {len(windows)} real windows, calibrated targets (threshold -> 0.5, T={temperature})")
    return loop.TeacherData(windows, targets, info, classes)


@main.command(name="eval")
@click.argument("datasets", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--model", type=click.Path(dir_okay=False), help="Model file (default: the shipped model).")
@click.option("--format", "data_format", type=click.Choice(["auto", "slakh", "irmas", "manifest"]), default="auto", show_default=True)
@click.option("--split", help="Only this split when the dataset defines splits (e.g. test).")
@click.option("--json", "as_json", is_flag=True, help="Also print the metrics as JSON on stdout.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", show_default=True)
@click.option("--jobs", "-j", type=click.IntRange(1), default=2, show_default=True)
@click.option("--record", metavar="NAME", help="Store the metrics in the model file under NAME (e.g. heldout); `tagger models` shows them.")
def eval_cmd(datasets, model, data_format, split, as_json, device, jobs, record) -> None:
    """Clip-level F1, mAP, per-class precision/recall/F1/AP of a model on labelled data."""
    loop = _import_train("train.loop")
    metrics_mod = _import_train("train.metrics")
    model = _load_model(model)
    clips = _load_clips(datasets, data_format, model.labels, split)
    try:
        metrics = loop.evaluate_model(model, clips, device=device, jobs=jobs, log=_log)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    stderr.print(metrics_mod.format_table(metrics), markup=False, highlight=False)
    if record:
        from tagger.model import save_checkpoint

        model.metrics[record] = {**metrics, "data": [str(d) for d in datasets]}
        save_checkpoint(model, model.path)
        stderr.print(f"recorded as {record!r} in {model.path}")
    if as_json:
        click.echo(json.dumps(metrics, indent=2))


@main.group()
def dataset() -> None:
    """Make training data."""


@dataset.command(name="render")
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--tracks", type=click.IntRange(1), default=100, show_default=True)
@click.option("--soundfont", "soundfonts", multiple=True, help="SoundFont path or name (fluidr3, timgm6mb, freepats), or samples (recorded notes from $TAGGER_SAMPLES_DIR, see train/samples.py); repeatable. Default: every .sf2 found.")
@click.option("--seconds", type=float, default=10.0, show_default=True)
@click.option("--sample-rate", type=int, default=16000, show_default=True)
@click.option("--midi-dir", type=click.Path(exists=True, file_okay=False), help="Render excerpts of these MIDI files instead of generated arrangements.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--start-index", type=click.IntRange(0), default=0, show_default=True, help="First track number (to grow a dataset).")
@click.option("--jobs", "-j", type=click.IntRange(1), default=2, show_default=True)
@click.option("--no-augment", is_flag=True, help="No gain/EQ/reverb/resampling/lossy variety.")
@click.option("--production", is_flag=True, help="Denser production chain: compression, limiting, more reverb/EQ/codecs.")
@click.option("--solo-fraction", type=click.FloatRange(0, 1), default=0.0, show_default=True, help="Share of generated tracks forced to one or two parts.")
@click.option("--expression", is_flag=True, help="Players shape their notes: vibrato, scoops, intonation, guitar bends, swells.")
@click.option("--strumming", is_flag=True, help="Guitar chord parts may strum: 8th/16th down and up strokes, some muted.")
def dataset_render(out_dir, tracks, soundfonts, seconds, sample_rate, midi_dir, seed, start_index, jobs, no_augment,
                   production, solo_fraction, expression, strumming) -> None:
    """Render MIDI with SoundFonts into a labelled dataset in the Slakh2100 layout."""
    render = _import_train("train.render")
    found = render.find_soundfonts()
    if not soundfonts:
        soundfonts = [path for name, path in found.items() if name not in ("freepats", "samples")]
    fonts = [found.get(f, f) for f in soundfonts]
    try:
        written = render.render_dataset(
            out_dir, n_tracks=tracks, soundfonts=fonts, seed=seed, seconds=seconds, sample_rate=sample_rate,
            midi_dir=midi_dir, jobs=jobs, start_index=start_index, progress=True, augment=not no_augment,
            production=production, solo=solo_fraction, expression=expression, strumming=strumming,
        )
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    stderr.print(f"{len(written)} tracks in {out_dir}")
