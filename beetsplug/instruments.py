"""beets plugin: instrument tags in the library (``plugins: instruments``).

Declares tagger's three fields as beets media fields, stored exactly where ``tagger tag``
stores them (built from ``tagger.tags.storage_keys``), so ``beet import`` / ``beet update``
read tags written outside beets and ``beet ls instruments:piano`` queries them.
``beet instruments [QUERY]`` and the import hook (``auto: yes``) run tagger's pipeline on
library items, write with tagger's safe writer and store the result in the database.
"""
from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import mediafile
from beets import ui
from beets.dbcore import types
from beets.library import Item, Library
from beets.plugins import BeetsPlugin

from tagger import tags  # light (mutagen); torch is imported only when something is tagged
from tagger.report import DRY_RUN, ERROR, SKIPPED, TAGGED, TrackResult

STORED = "stored"  # analysed, written to the database only (no-write)
PRETEND = "pretend"

# beets field name -> tagger field name
FIELDS = {
    "instruments": tags.FIELD_INSTRUMENTS,
    "instruments_scores": tags.FIELD_SCORES,
    "instruments_model": tags.FIELD_MODEL,
}


def _styles(field: str, multi: bool) -> list[mediafile.StorageStyle]:
    """mediafile storage styles for ``field``, one per tag kind, from tagger's own key table."""
    keys = tags.storage_keys(field)
    frame, _, desc = keys["id3"].partition(":")  # "TXXX:INSTRUMENTS": frame TXXX, description INSTRUMENTS
    if multi:
        styles = {
            "id3": mediafile.MP3ListDescStorageStyle(desc=desc, key=frame),
            "vorbis": mediafile.ListStorageStyle(keys["vorbis"]),
            "mp4": mediafile.MP4ListStorageStyle(keys["mp4"]),
        }
    else:
        styles = {
            "id3": mediafile.MP3DescStorageStyle(desc=desc, key=frame),
            "vorbis": mediafile.StorageStyle(keys["vorbis"]),
            "mp4": mediafile.MP4StorageStyle(keys["mp4"]),
        }
    # Only the formats tagger tags (mediafile would also put Vorbis-style keys into APE tags).
    for kind, formats in tags.kind_formats().items():
        styles[kind].formats = formats
    return list(styles.values())


def media_fields() -> dict[str, mediafile.MediaField]:
    return {
        "instruments": mediafile.ListMediaField(*_styles(tags.FIELD_INSTRUMENTS, multi=True)),
        "instruments_scores": mediafile.MediaField(*_styles(tags.FIELD_SCORES, multi=False)),
        "instruments_model": mediafile.MediaField(*_styles(tags.FIELD_MODEL, multi=False)),
    }


def _item_path(item: Item) -> str:
    return str(Path(os.fsdecode(item.path)))  # the form tagger's results name files in


class InstrumentsPlugin(BeetsPlugin):
    item_types = {
        "instruments": types.MULTI_VALUE_DSV,
        "instruments_scores": types.STRING,
        "instruments_model": types.STRING,
    }

    def __init__(self) -> None:
        super().__init__()
        self.config.add({"auto": True, "model": None, "device": "auto", "jobs": 2, "batch_size": None})
        for name, field in media_fields().items():
            self.add_media_field(name, field)
        self._loaded = None
        self.register_listener("write", self._on_write)
        if self.config["auto"].get(bool):
            # After beets moved/copied the files and wrote its own tags: we tag the final files.
            self.register_listener("import_task_files", self._on_import_files)

    # ------------------------------------------------------------ beets hooks

    def commands(self) -> list[ui.Subcommand]:
        cmd = ui.Subcommand("instruments", help="tag items with the instruments that play in them (tagger)")
        cmd.parser.add_option("-f", "--force", action="store_true", default=False,
                              help="re-tag items already tagged by this model, and person-written INSTRUMENTS tags")
        cmd.parser.add_option("-p", "--pretend", action="store_true", default=False,
                              help="analyse and show the instruments; change neither files nor the database")
        cmd.parser.add_option("-w", "--write", action="store_true", default=None,
                              help="write tags to the files (default: import.write)")
        cmd.parser.add_option("-W", "--nowrite", action="store_false", dest="write",
                              help="store the results in the database only")
        cmd.func = self._command
        return [cmd]

    def _command(self, lib: Library, opts: Any, args: list[str]) -> None:
        items = list(lib.items(args))
        write = ui.should_write(opts.write)
        counts = self._with_progress(
            lambda say, on_start, advance: self.tag_items(
                items, write=write, force=opts.force, pretend=opts.pretend, say=say, on_start=on_start, advance=advance,
            )
        )
        ui.print_("instruments: " + (", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "no items"))
        if counts[ERROR]:
            raise ui.UserError(f"instruments: {counts[ERROR]} of {len(items)} items failed")

    def _on_import_files(self, session: Any, task: Any) -> None:
        def say(message: str, error: bool = False) -> None:
            (self._log.error if error else self._log.info)("{}", message)

        # An error in one file is reported and the import goes on (the hook never raises for bad input).
        self.tag_items(task.imported_items(), write=session.config["write"].get(bool), force=False, pretend=False,
                       say=say)

    def _on_write(self, item: Item, path: bytes, tags: dict[str, Any]) -> None:
        # An empty value means "no such tag" (as tagger writes it), not an empty frame or atom.
        for name in FIELDS:
            if name in tags and not tags[name]:
                tags[name] = None

    # ------------------------------------------------------------ the work

    def _model(self):
        if self._loaded is None:
            from tagger.catalog import load
            from tagger.model import ModelError

            model = self.config["model"].get()  # a name (`tagger models`) or a path, as `tagger tag --model`
            try:
                self._loaded = load(os.path.expanduser(model) if model else None)
            except ModelError as exc:
                raise ui.UserError(f"instruments: {exc}") from None
        return self._loaded

    def tag_items(
        self,
        items: Iterable[Item],
        *,
        write: bool,
        force: bool,
        pretend: bool,
        say: Callable[..., None],
        on_start: Callable[[int], None] | None = None,
        advance: Callable[[str], None] | None = None,
    ) -> Counter:
        """Analyse items with tagger's pipeline, write tags (when ``write``) and store them in the DB;
        returns how many items ended with each status."""
        from tagger.pipeline import tag_paths

        model = self._model()
        counts: Counter = Counter()
        by_path: dict[str, list[Item]] = {}
        for item in items:
            if not write and not force and item.get("instruments_model") == model.model_id:
                counts[SKIPPED] += 1  # files are not consulted without writing: the database says it is done
                continue
            by_path.setdefault(_item_path(item), []).append(item)

        def on_result(result: TrackResult) -> None:
            if advance:
                advance(Path(result.path).name)
            for item in by_path.get(result.path, ()):
                counts[self._apply(item, result, pretend=pretend, say=say)] += 1

        try:
            tag_paths(
                list(by_path), model=model, device=self.config["device"].as_str(), jobs=self.config["jobs"].get(int),
                batch_size=self.config["batch_size"].get(), dry_run=pretend or not write, force=force, hidden=True,
                on_start=on_start, on_result=on_result,
            )
        except ValueError as exc:  # e.g. device: cuda without a GPU
            raise ui.UserError(f"instruments: {exc}") from None
        return counts

    def _apply(self, item: Item, result: TrackResult, *, pretend: bool, say: Callable[..., None]) -> str:
        """Store one item's result in the database; returns the status to count."""
        if result.status == ERROR:
            say(f"{result.path}: {result.error}", error=True)
            return ERROR
        if pretend:
            found = ", ".join(result.instruments) if result.status == DRY_RUN else result.status
            say(f"{item}: {found or '-'}")
            return PRETEND if result.status == DRY_RUN else result.status
        if result.status == DRY_RUN:  # not written to the file: the database gets the result itself
            values = (result.instruments, tags.scores_text(result.instruments, result.scores), result.model)
            status = STORED
        else:  # tagged, skipped, or a person's tag: the file is the truth
            try:
                state = tags.read_tags(result.path)
            except tags.TagError as exc:
                say(f"{result.path}: {exc}", error=True)
                return ERROR
            values = (list(state.instruments), state.scores or "", state.model or "")
            status = result.status
            item.mtime = item.current_mtime()  # the file may be new: `beet update` must not see a change
        item["instruments"], item["instruments_scores"], item["instruments_model"] = values
        item.store()
        if status in (TAGGED, STORED):
            say(f"{item}: {', '.join(values[0]) or '-'}")
        return status

    def _with_progress(self, run: Callable[..., Counter]) -> Counter:
        from rich.console import Console
        from rich.markup import escape
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        console = Console(stderr=True, highlight=False)
        with Progress(TextColumn("[bold]instruments"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      TextColumn("{task.fields[current]}", style="dim"), console=console) as progress:
            task = progress.add_task("instruments", total=None, current="")

            def say(message: str, error: bool = False) -> None:
                if error:  # stderr, above the bar
                    progress.console.print("[red]error[/red]: " + escape(message), soft_wrap=True)
                elif sys.stdout.isatty():  # the bar's terminal: print above it, not through it
                    progress.console.print(escape(message), soft_wrap=True)
                else:  # piped: results on stdout
                    ui.print_(message)

            def on_start(total: int) -> None:
                progress.update(task, total=total)

            def advance(name: str) -> None:
                progress.update(task, advance=1, current=name[-40:])

            return run(say, on_start, advance)
