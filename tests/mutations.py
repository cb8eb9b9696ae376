"""Mutation check: break the code on purpose, one line at a time, and see the guarding tests go red.

    python3 tests/mutations.py              # every mutation
    python3 tests/mutations.py ctrl mtime   # those whose name contains one of these words
    python3 tests/mutations.py --list

Each mutation is a string replacement in one source file, applied to a temporary copy of the
project (the working tree, as git lists it); the tests named for it run there with PYTHONPATH
pointing at the copy, so in-process and subprocess runs (``python -m tagger``, the console
script) both import the mutated code. The real sources are never touched. A mutation whose text
is no longer found in the source (the code moved on) is reported as such: update it.

Not collected by pytest (the file name does not start with ``test_``); run it by hand after
changing the code or the tests it lists.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]


M = Mutation
MUTATIONS: list[Mutation] = [
    # ---- caught before issue 7
    M("tags: write in place even when the tags outgrow the padding", "tagger/tags.py",
      "    if info.padding < 0:\n        raise _NoRoom()", "    if False:\n        raise _NoRoom()",
      ("tests/test_tags.py::test_aborted_in_place_attempt_changes_no_byte", "tests/test_tags.py::test_copy_path_for_big_tags")),
    M("infer: drop the last partial batch", "tagger/infer.py",
      "return self._run(full_only=False) if self._pending else []", "return []",
      ("tests/test_core.py::test_batches_mixed_across_tracks_match_one_track_at_a_time",)),
    M("aggregate: mean computes max", "tagger/aggregate.py",
      "return window_probs.mean(axis=0)", "return window_probs.max(axis=0)",
      ("tests/test_core.py::test_aggregation_methods",)),
    M("untag removes every tag", "tagger/tags.py",
      "    _write_fields(path, {f: [] for f in FIELDS}, preserve_mtime=False, expected_stat=None)\n    return True",
      "    mutagen.File(path).delete()\n    return True",
      ("tests/test_tags.py::test_remove_tags", "tests/test_cli.py::test_untag_restores_the_tag_state")),
    M("dry run writes tags", "tagger/pipeline.py",
      "        if not settings.dry_run:\n            write_result(", "        if True:\n            write_result(",
      ("tests/test_cli.py::test_dry_run_writes_nothing_and_reports_to_stdout",)),
    M("ID3v2.3 saved as v2.4", "tagger/tags.py",
      'if kind == "id3" and _is_v23(audio, kind):', "if False:",
      ("tests/test_tags.py::test_id3v23_stays_v23_and_joins_values",)),
    M("untag --dry-run writes", "tagger/tags.py",
      "    if dry_run:\n        return True\n    _write_fields", "    _write_fields",
      ("tests/test_tags.py::test_remove_tags", "tests/test_cli.py::test_untag_restores_the_tag_state")),
    # ---- survived before issue 7
    M("copy check compares packet counts only", "tagger/tags.py",
      "before[:2] != after[:2]", "before[:1] != after[:1]",
      ("tests/test_guards.py::test_copy_check_compares_the_audio_payload_not_only_packet_counts",)),
    M("copy check skips the FLAC MD5", "tagger/tags.py",
      "if isinstance(audio, FLAC) and FLAC(tmp).info.md5_signature != audio.info.md5_signature:", "if False:",
      ("tests/test_guards.py::test_copy_check_compares_the_flac_md5",)),
    M("pipeline ignores the aggregation (always max)", "tagger/pipeline.py",
      "scores = aggregate(window_probs, aggregation, topk=topk)", 'scores = aggregate(window_probs, "max", topk=topk)',
      ("tests/test_guards.py::test_aggregation_topk_threshold_and_timeline_options_reach_the_tags",
       "tests/test_guards.py::test_model_default_aggregation_is_used")),
    M("pipeline ignores --threshold", "tagger/pipeline.py",
      "thresholds = [threshold] * len(model.labels) if threshold is not None else model.thresholds",
      "thresholds = model.thresholds",
      ("tests/test_guards.py::test_model_thresholds_and_the_threshold_option_choose_the_labels",)),
    M("pipeline ignores --topk", "tagger/pipeline.py",
      "topk=topk or model.topk", "topk=model.topk",
      ("tests/test_guards.py::test_aggregation_topk_threshold_and_timeline_options_reach_the_tags",)),
    M("pipeline ignores --preserve-mtime", "tagger/pipeline.py",
      "preserve_mtime=settings.preserve_mtime)", "preserve_mtime=False)",
      ("tests/test_guards.py::test_preserve_mtime_option_keeps_the_modification_time",)),
    M("a decode error raises instead of being reported", "tagger/infer.py",
      "    except DecodeError as exc:\n        yield Block(track, None, last=True, error=str(exc))",
      "    except DecodeError as exc:\n        raise",
      ("tests/test_guards.py::test_a_file_the_tag_reader_accepts_but_the_decoder_rejects",)),
    M("a tag-write error raises instead of being reported", "tagger/pipeline.py",
      "        result.status, result.error = ERROR, str(exc)", "        raise",
      ("tests/test_guards.py::test_a_tag_write_error_is_one_line_and_the_run_goes_on",
       "tests/test_guards.py::test_a_file_changed_during_the_run_is_reported_not_overwritten")),
    M("stale temp files are never cleaned", "tagger/pipeline.py",
      "            tags.clean_stale_temps(folder)", "            pass",
      ("tests/test_guards.py::test_a_run_removes_temp_files_left_by_a_killed_run",
       "tests/test_cli.py::test_sigkill_mid_run_leaves_every_file_whole")),
    M('"file changed" stat not passed to the writer', "tagger/pipeline.py",
      "            expected_stat=stat,", "            expected_stat=None,",
      ("tests/test_guards.py::test_a_file_changed_during_the_run_is_reported_not_overwritten",)),
    M('"file changed" not re-checked before the rename', "tagger/tags.py",
      "        if not _same_stat(os.stat(real), (st.st_size, st.st_mtime_ns)):", "        if False:",
      ("tests/test_guards.py::test_a_change_while_the_copy_is_written_stops_the_rename",)),
    M("Ctrl-C swallowed with exit 0", "tagger/cli.py",
      "else EXIT_INTERRUPTED)", "else EXIT_OK)",
      ("tests/test_cli.py::test_ctrl_c_stops_cleanly_with_a_summary_and_exit_130",)),
    # ---- the weak spots of issue 7
    M("read-only mode bits not checked (root writes anyway)", "tagger/tags.py",
      '    if not st.st_mode & 0o222:\n        raise TagError("read-only file")',
      '    if False:\n        raise TagError("read-only file")',
      ("tests/test_guards.py::test_read_only_files_and_folders_are_refused_even_for_root",
       "tests/test_cli.py::test_bad_inputs_get_one_clear_line_and_exit_code_1")),
    M("timeline ignores the chosen thresholds", "tagger/pipeline.py",
      "            window_probs, model.labels, thresholds,", "            window_probs, model.labels, model.thresholds,",
      ("tests/test_guards.py::test_aggregation_topk_threshold_and_timeline_options_reach_the_tags",)),
    M("a damaged tail fails the whole track", "tagger/decode.py",
      "            if decoded == 0:", "            if True:",
      ("tests/test_cli.py::test_bad_inputs_get_one_clear_line_and_exit_code_1",)),
    M("eval ignores the model's thresholds", "train/loop.py",
      "scores, model.labels, model.thresholds)", "scores, model.labels, [0.5] * len(model.labels))",
      ("tests/test_train.py::test_tiny_training_run_yields_a_model_the_tagger_uses",)),
    # ---- the Dask cluster (tagger tag --scheduler)
    M("cluster: every task loads the model again", "tagger/cluster.py",
      '    runners = _runners.__dict__.setdefault("by_key", {})', "    runners, _models = {}, {}",
      ("tests/test_cluster.py::test_dry_run_scores_like_one_machine_and_loads_model_once_per_worker",)),
    M("cluster: options (dry run, force, thresholds) not sent to the workers", "tagger/cluster.py",
      "model.weights_hash, device, batch_size, settings, pure=False", "model.weights_hash, device, batch_size, tag_settings(model), pure=False",
      ("tests/test_cluster.py::test_dry_run_scores_like_one_machine_and_loads_model_once_per_worker",)),
    M("cluster: results not handed to on_result (report, progress)", "tagger/cluster.py",
      "                if on_result:\n                    on_result(result)", "                if False:\n                    on_result(result)",
      ("tests/test_cluster.py::test_tags_skips_and_force_through_the_env_variable",)),
    M("cluster: a worker death is an anonymous task failure, never retried", "tagger/cluster.py",
      "    except KilledWorker:", "    except ZeroDivisionError:",
      ("tests/test_cluster.py::test_file_that_keeps_killing_workers_is_reported_and_left_whole",)),
    M("cluster: a given-up chunk is retried whole, failing its innocent files", "tagger/cluster.py",
      "retries.extend([item] for item in chunk)", "retries.extend([chunk])",
      ("tests/test_cluster.py::test_file_that_keeps_killing_workers_is_reported_and_left_whole",)),
    M("cluster: an unreachable scheduler raises", "tagger/cluster.py",
      "    except (OSError, TimeoutError, ValueError, TypeError) as exc:\n        raise ClusterError(f\"cannot reach",
      "    except ZeroDivisionError as exc:\n        raise ClusterError(f\"cannot reach",
      ("tests/test_cluster.py::test_unreachable_scheduler_is_a_usage_error",)),
    M("cluster: workers use whatever model file is at the path", "tagger/cluster.py",
      "        if model.weights_hash == weights_hash:", "        if True:",
      ("tests/test_cluster.py::test_workers_refuse_a_model_other_than_the_clients",)),
    M("cluster: workers get the client's relative paths", "tagger/cluster.py",
      "items = [(index, os.path.abspath(path)) for", "items = [(index, str(path)) for",
      ("tests/test_cluster.py::test_relative_paths_reach_workers_whose_working_folder_differs",)),
    M("cli: --scheduler quietly tags on this machine", "tagger/cli.py",
      "        run = tag_paths_on_cluster", "        run = lambda paths, client, **options: tag_paths(paths, jobs=0, **options)",
      ("tests/test_cluster.py::test_dry_run_scores_like_one_machine_and_loads_model_once_per_worker",)),
    M("lifetime: pool workers are not armed as they start", "tagger/lifetime.py",
      "    return functools.partial(die_with_parent, main, use_prctl=False)", "    return functools.partial(int, 0)",
      ("tests/test_lifetime.py::test_kill_9_ends_pool_workers_that_never_ran_our_task",
       "tests/test_lifetime.py::test_kill_9_of_a_render_leaves_no_pool_worker")),
    M("loop: training windows never get the background noise asked for", "train/loop.py",
      "    x = add_noise(x, config.noise)  # rendered", "    x = add_noise(x, 0.0)  # rendered",
      ("tests/test_train.py::test_training_windows_get_the_noise_the_config_asks_for",)),
    M("loop: noise level ignores the music (fixed level)", "train/loop.py",
      "    level = rms * 10 ** (", "    level = 0.1 * 10 ** (",
      ("tests/test_train.py::test_background_noise_share_level_and_colour",)),
    M("loop: noise is always white", "train/loop.py",
      "freqs[None, :] ** (-alpha / 2)", "freqs[None, :] ** 0",
      ("tests/test_train.py::test_background_noise_share_level_and_colour",)),
    M("catalog: temps of killed downloads are never removed", "tagger/catalog.py",
      "    remove_stale_temps(folder, _TEMP)  # leftovers", "    pass  # leftovers",
      ("tests/test_catalog.py::test_interrupted_download_leaves_nothing_and_stale_temps_are_cleaned",)),
    M("lifetime: stale-temp cleaning deletes the temps of runs still going", "tagger/lifetime.py",
      "if not match or pid_alive(int(match.group(1))):", "if not match:",
      ("tests/test_tags.py::test_clean_stale_temps", "tests/test_guards.py",
       "tests/test_lifetime.py::test_remove_stale_pool_temps_keeps_those_of_live_processes")),
    M("lifetime: a pool never removes the pool temps of killed runs", "tagger/lifetime.py",
      "    remove_stale_pool_temps()  # of runs killed", "    pass  # of runs killed",
      ("tests/test_lifetime.py::test_the_next_render_removes_the_pool_temps_of_a_render_killed_with_its_process_group",)),
    M("lifetime: pool-temp cleaning deletes other users' leftovers", "tagger/lifetime.py",
      "            if own_only and entry.stat", "            if False and entry.stat",
      ("tests/test_lifetime.py::test_remove_stale_pool_temps_keeps_those_of_live_processes",)),
    M("expression: the samples family ignores pitch bends", "train/samples.py",
      "    bend = cents_curve(inst, rate, n)  # vibrato", "    bend = None  # vibrato",
      ("tests/test_samples.py::test_samples_family_plays_pitch_bends_and_expression",)),
    M("expression: the samples family ignores swells (CC11)", "train/samples.py",
      "    return buf if level is None else buf * level", "    return buf",
      ("tests/test_samples.py::test_samples_family_plays_pitch_bends_and_expression",)),
    M("expression: vibrato from the first instant (no onset)", "train/expression.py",
      "np.clip(dt / onset - 1, 0, 1)", "np.clip(dt / onset + 1, 0, 1)",
      ("tests/test_expression.py::test_vibrato_sets_in_after_the_attack_at_a_players_rate_and_depth",)),
    M("expression: renders get expression without --expression", "train/render.py",
      "    if expression:\n        effects[\"expression\"]", "    if True:\n        effects[\"expression\"]",
      ("tests/test_samples.py::test_dataset_render_expression_is_opt_in",)),
    M("expression: pianos and drums get bends too", "train/expression.py",
      "    if inst.is_drum or style is None or", "    style = style or _LEAD\n    if",
      ("tests/test_expression.py::test_perform_writes_bends_and_expression_only_for_shaping_players",)),
    M("windows: the tail window is zero-padded again", "tagger/windows.py",
      "ready.append(buffer[buffer.size - window :].copy())", "ready.append(np.pad(buffer[next_start - consumed :], (0, window))[:window])",
      ("tests/test_core.py::test_windows_cover_the_track_and_end_at_its_end", "tests/test_guards.py")),
    M("windows: a track shorter than one window is zero-padded again", "tagger/windows.py",
      "ready.append(tile(buffer, window))", "ready.append(np.pad(buffer, (0, window - buffer.size)))",
      ("tests/test_core.py::test_windows_cover_the_track_and_end_at_its_end",)),
    M("training: a clip shorter than a window is zero-padded again", "train/loop.py",
      "window = tile(audio.signal[start : start + size], size)",
      "window = np.pad(audio.signal[start : start + size], (0, size - min(size, audio.signal.size)))",
      ("tests/test_train.py::test_a_training_window_of_a_clip_shorter_than_a_window_repeats_the_clip",)),
    # ---- growing a trained tagnet (train/widen.py, tagger train --init M --widths ...)
    M("widen: copies split their weights evenly (they stay identical)", "train/widen.py",
      "raw = torch.rand(*shape, generator=generator) + 0.5", "raw = torch.ones(*shape)",
      ("tests/test_train.py::test_widening_a_tagnet_keeps_its_outputs_and_lets_the_copies_differ",)),
    M("widen: a copied channel's readers not shared out", "train/widen.py",
      "return widened * _shares(in_map, widened.shape, generator)", "return widened",
      ("tests/test_train.py::test_widening_a_tagnet_keeps_its_outputs_and_lets_the_copies_differ",)),
    M("widen: a residual block's output gets its own channel order", "train/widen.py",
      "out_space = space if old.residual else", "out_space = space if False else",
      ("tests/test_train.py::test_widening_a_tagnet_keeps_its_outputs_and_lets_the_copies_differ",)),
    M("training: a narrower init refused instead of grown", "train/loop.py",
      'grow = init.arch == config.arch == "tagnet" and', 'grow = False and',
      ("tests/test_teacher.py::test_train_with_a_teacher_end_to_end",)),
    # ---- domain-adversarial training; installed downloads follow the catalog
    M("domain: gradient reversal passes the gradient unreversed", "train/domain.py",
      "return -ctx.weight * grad, None", "return ctx.weight * grad, None",
      ("tests/test_domain.py::test_gradient_reversal_is_identity_forward_and_negates_scaled_gradients",
       "tests/test_domain.py::test_real_windows_take_their_share_and_only_the_discriminator_sees_them")),
    M("domain: real windows reach the tagging loss", "train/loop.py",
      "loss = opt.loss_fn(model.network.head(features[:len(x) - n_real]).float(), y)",
      "loss = opt.loss_fn(model.network.head(features).float(), torch.cat([y, y[:n_real]]))",
      ("tests/test_domain.py::test_real_windows_take_their_share_and_only_the_discriminator_sees_them",)),
    M("domain: real windows labelled as renders", "train/loop.py",
      "is_real[len(pairs):] = 1.0", "is_real[len(x):] = 1.0",
      ("tests/test_domain.py::test_real_windows_take_their_share_and_only_the_discriminator_sees_them",)),
    M("teacher classes: the head reads the rendered rows", "train/loop.py",
      "features[len(pairs):len(pairs) + n_teacher]", "features[:n_teacher]",
      ("tests/test_teacher.py::test_teacher_class_scores_reach_the_pooled_features_of_the_teacher_windows_only",)),
    M("teacher classes: the weight is ignored", "train/loop.py",
      "config.teacher_classes * torch.nn.functional", "torch.nn.functional",
      ("tests/test_teacher.py::test_teacher_class_scores_reach_the_pooled_features_of_the_teacher_windows_only",)),
    M("teacher: label scores not from their strongest class", "train/teacher.py",
      "label_logits(logits, self.class_table)", "logits[:, :len(self.labels)]",
      ("tests/test_teacher.py::test_train_with_a_teacher_end_to_end",)),
    M("domain: silent windows of real audio kept", "train/teacher.py",
      "w = w[np.sqrt(np.mean(w**2, axis=1)) > 1e-3]", "w = w[np.sqrt(np.mean(w**2, axis=1)) >= 0]",
      ("tests/test_domain.py::test_real_windows_skip_silence_cap_per_file_and_report_bad_files",)),
    M("catalog: an installed download keeps the settings it was installed with", "tagger/catalog.py",
      "    if str(model) not in DOWNLOADS:\n        return loaded", "    if True:\n        return loaded",
      ("tests/test_catalog.py::test_an_installed_model_takes_the_catalog_settings_of_a_newer_tagger",)),
    # ---- real-sounds set, strumming
    M("real-sounds: sounds shorter than half a second kept", "bench/real_sounds.py",
      "        if duration < MIN_SECONDS:", "        if duration < 0:",
      ("tests/test_datasets.py::test_real_sounds_manifest_from_unpacked_packages",)),
    M("real-sounds: non-instrument sounds get a label", "bench/real_sounds.py",
      '"labels": labels, "source"', '"labels": labels or "drums", "source"',
      ("tests/test_datasets.py::test_real_sounds_manifest_from_unpacked_packages",)),
    M("real-sounds: compressed Qt resources written still compressed", "bench/real_sounds.py",
      "zlib.decompress(payload[4:]) if flags & 1 else payload", "payload",
      ("tests/test_datasets.py::test_unpack_rcc_writes_the_files_of_one_folder_byte_for_byte",)),
    M("real-sounds: Qt resources outside the folder unpacked too", "bench/real_sounds.py",
      '        if not path.lstrip("/").startswith(folder + "/"):\n            return\n', "",
      ("tests/test_datasets.py::test_unpack_rcc_writes_the_files_of_one_folder_byte_for_byte",)),
    M("strumming: up strokes played from the bottom string", "train/arrange.py",
      "enumerate(notes if down else notes[::-1])", "enumerate(notes)",
      ("tests/test_render.py::test_strumming_up_strokes_and_muted_strokes_only_when_asked",)),
    M("strumming: no muted strokes", "train/arrange.py",
      "muted = rng.random() < mute", "muted = rng.random() < 0",
      ("tests/test_render.py::test_strumming_up_strokes_and_muted_strokes_only_when_asked",)),
    M("strumming: the flag is ignored", "train/arrange.py",
      "    if song.strumming and part.inst.program in _GUITARS", "    if False and part.inst.program in _GUITARS",
      ("tests/test_render.py::test_strumming_up_strokes_and_muted_strokes_only_when_asked",)),
    # ---- treble tilt (tagger train --tilt)
    M("tilt: the config's share is ignored", "train/loop.py",
      "x = add_tilt(x, config.tilt, model.features.sample_rate)", "x = add_tilt(x, 0.0, model.features.sample_rate)",
      ("tests/test_train.py::test_training_windows_get_the_tilt_the_config_asks_for",)),
    M("tilt: only brighter, never duller", "train/loop.py",
      "TILT_DB = (-12.0, 12.0)", "TILT_DB = (0.0, 12.0)", ("tests/test_train.py::test_treble_tilt_share_and_range_low_band_kept",)),
    M("tilt: every window tilted", "train/loop.py",
      "chosen = _uniform(x, 0.0, 1.0, generator).flatten() < prob", "chosen = _uniform(x, 0.0, 1.0, generator).flatten() < 1.0",
      ("tests/test_train.py::test_treble_tilt_share_and_range_low_band_kept",)),
    # ---- model soup (bench/soup.py)
    M("soup: the first model's weights instead of the mean", "bench/soup.py",
      "torch.stack([s[key] for s in states]).mean(dim=0)", "states[0][key].clone()",
      ("tests/test_train.py::test_soup_is_the_mean_of_every_float_tensor_and_refuses_other_labels",)),
    M("soup: models with other labels mixed in", "bench/soup.py",
      "        if (other.arch, other.labels,", "        if False and (other.arch, other.labels,",
      ("tests/test_train.py::test_soup_is_the_mean_of_every_float_tensor_and_refuses_other_labels",)),
    # ---- real-chosen thresholds written into a model (bench/choose_on_real.py)
    M("choose_on_real: the earlier training notes dropped", "bench/choose_on_real.py",
      'model.training = {**model.training, "thresholds": note}', 'model.training = {"thresholds": note}',
      ("tests/test_train.py::test_choose_on_real_writes_the_chosen_thresholds_and_keeps_weights_and_notes",)),
    M("choose_on_real: the aggregation not written", "bench/choose_on_real.py",
      "    model.aggregation = aggregation\n", "",
      ("tests/test_train.py::test_choose_on_real_writes_the_chosen_thresholds_and_keeps_weights_and_notes",)),
    # ---- thresholds re-chosen on an unseen font family (bench/choose_on_unseen.py)
    M("choose_on_unseen: scores aggregated by mean, not the model's own aggregation", "bench/choose_on_unseen.py",
      "model.aggregation, model.topk)", '"mean", model.topk)',
      ("tests/test_train.py::test_choose_on_unseen_writes_thresholds_tuned_under_the_models_own_aggregation",)),
    M("choose_on_unseen: the shipped thresholds written back", "bench/choose_on_unseen.py",
      "with_thresholds(model.to(\"cpu\"), chosen,", "with_thresholds(model.to(\"cpu\"), shipped,",
      ("tests/test_train.py::test_choose_on_unseen_writes_thresholds_tuned_under_the_models_own_aggregation",)),
]

_IGNORED = shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", "data", "runs", ".whl")


def copy_project(dest: Path) -> None:
    """The working tree's files (tracked and untracked, not ignored) into dest."""
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            capture_output=True)
    if listed.returncode != 0:
        shutil.copytree(ROOT, dest, ignore=_IGNORED, dirs_exist_ok=True)
        return
    for name in filter(None, listed.stdout.decode().split("\0")):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)


LOGS = Path(tempfile.gettempdir()) / "tagger-mutations-logs"  # each pytest run's full output


def run_tests(copy: Path, tests: tuple[str, ...], timeout: float, log: str) -> tuple[int, str, float]:
    """(pytest exit code, first failing test, seconds) for these tests in the copy."""
    env = dict(os.environ, PYTHONPATH=str(copy) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               PYTHONDONTWRITEBYTECODE="1")
    cmd = ["nice", "-n", "10", sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    started = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return -1, "timed out", time.monotonic() - started
    LOGS.mkdir(exist_ok=True)
    (LOGS / f"{log}.txt").write_text(proc.stdout + proc.stderr)
    failed = next((line.split(" ", 1)[1] for line in proc.stdout.splitlines() if line.startswith(("FAILED tests", "ERROR tests"))), "")
    return proc.returncode, failed, time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("words", nargs="*", help="only mutations whose name contains one of these")
    parser.add_argument("--list", action="store_true", help="list the mutations and their tests")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per pytest run")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmutated run of the selected tests")
    args = parser.parse_args()
    chosen = [m for m in MUTATIONS if not args.words or any(w.lower() in m.name.lower() for w in args.words)]
    if args.list:
        for m in chosen:
            print(f"{m.name}\n    {m.file}: {m.old!r} -> {m.new!r}\n    " + "\n    ".join(m.tests))
        return 0
    with tempfile.TemporaryDirectory(prefix="tagger-mutations-") as tmp:
        copy = Path(tmp)
        copy_project(copy)
        probe = subprocess.run([sys.executable, "-c", "import tagger; print(tagger.__file__)"], cwd=tmp, text=True,
                               capture_output=True, env=dict(os.environ, PYTHONPATH=str(copy)))
        assert probe.stdout.startswith(str(copy)), f"the copy is not the tagger imported: {probe.stdout}{probe.stderr}"
        if not args.no_baseline:
            tests = tuple(dict.fromkeys(t for m in chosen for t in m.tests))
            rc, failed, seconds = run_tests(copy, tests, args.timeout, "baseline")
            print(f"baseline (no mutation, {len(tests)} tests): {'green' if rc == 0 else f'RED rc {rc}: {failed}'} in {seconds:.0f} s",
                  flush=True)
            if rc != 0:
                print(f"see {LOGS / 'baseline.txt'}")
                return 2
        rows = []
        for m in chosen:
            source = copy / m.file
            original = source.read_text()
            if original.count(m.old) != 1:
                rows.append((m, "NOT FOUND", f"{original.count(m.old)} matches of the text to replace", 0.0))
            else:
                source.write_text(original.replace(m.old, m.new))
                try:
                    rc, failed, seconds = run_tests(copy, m.tests, args.timeout, f"{MUTATIONS.index(m):02d}")
                finally:
                    source.write_text(original)
                verdict = "caught" if rc == 1 else "NOT CAUGHT" if rc == 0 else f"rc {rc}"
                rows.append((m, verdict, failed, seconds))
            print(f"{rows[-1][1]:>10}  {m.name}  ({rows[-1][3]:.0f} s) {rows[-1][2]}", flush=True)
    print("\n| mutation | result | first failing test |\n|---|---|---|")
    for m, verdict, failed, _ in rows:
        print(f"| {m.name} | {verdict} | {failed.split(' - ')[0]} |")
    caught = sum(r[1] == "caught" for r in rows)
    print(f"\n{caught}/{len(rows)} caught; pytest output of each run in {LOGS}")
    return 0 if caught == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
