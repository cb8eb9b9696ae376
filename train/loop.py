"""Training: dataset -> loader -> model -> metrics -> checkpoint.

Clips are decoded once into memory at the model's sample rate; each epoch draws random
windows from them (labels from note activity inside the window), augments them (random
gain, mixup, SpecAugment masking), and trains with BCE + per-class pos_weight, AdamW and a
cosine schedule. Validation scores whole clips the way the tagger scores tracks
(windows -> aggregate), picks the aggregation, early-stops on mAP and tunes per-class
thresholds there. Never on a test or held-out split.
"""
from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torchaudio
import torchaudio.functional as AF
from joblib import delayed
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from tagger.aggregate import aggregate
from tagger.decode import DecodeError, decode
from tagger.features import FeatureConfig
from tagger.infer import BatchRunner, pick_device
from tagger.lifetime import worker_pool
from tagger.model import DEFAULT_ARCH, TAGNET_WIDTHS, TaggerModel, new_model, save_checkpoint
from tagger.windows import iter_window_blocks, tile
from train.datasets import Clip, split_clips, window_targets
from train.domain import DomainData, DomainHead, ramp, reverse_gradient
from train.metrics import evaluate, tune_thresholds
from train.widen import widen_tagnet

Log = Callable[[str], None]


@dataclass
class TrainConfig:
    arch: str = DEFAULT_ARCH
    arch_args: dict = field(default_factory=dict)
    epochs: int = 30
    steps_per_epoch: int | None = None  # default: one window per training clip per epoch
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-2
    warmup_epochs: int = 1
    mixup: float = 0.3  # probability that a batch is mixed with a shuffled copy of itself
    spec_augment: bool = True
    patience: int = 8  # epochs without validation mAP gain before stopping
    seed: int = 0
    validation: float = 0.15
    name: str = "tagger"
    version: str = "1"
    threads: int | None = None
    teacher_fraction: float = 0.25  # share of each batch drawn from teacher windows, when given
    teacher_classes: float = 0.0  # weight of the loss on the teacher's class scores (train.teacher); 0: off
    balance_sources: bool = False  # draw each window's source (font family, dataset) uniformly first
    noise: float = 0.0  # probability that a window gets background noise (see add_noise)
    tilt: float = 0.0  # probability that a window gets a random treble shelf (see add_tilt)
    domain_fraction: float = 0.25  # share of each batch drawn from real, unlabelled windows, when given
    domain_weight: float = 0.3  # gradient-reversal weight at the end of DANN's ramp (train.domain)


@dataclass
class _Audio:
    clip: Clip
    signal: np.ndarray  # mono float32 at the model rate, from clip.start to clip.end
    offset: float  # file time of signal[0]


def _load_one(clip: Clip, sample_rate: int) -> _Audio | None:
    try:
        signal = decode(clip.path, sample_rate=sample_rate)
    except (DecodeError, OSError):
        return None
    start = int(round(clip.start * sample_rate))
    end = None if clip.end is None else int(round(clip.end * sample_rate))
    return _Audio(clip, np.ascontiguousarray(signal[start:end]), clip.start)


def load_audio(clips: Sequence[Clip], sample_rate: int, *, jobs: int = 2, log: Log = print) -> list[_Audio]:
    """Decode every clip once (in parallel); undecodable clips are reported and dropped."""
    pool = worker_pool(jobs, batch_size=16)  # workers end with a killed run
    loaded = pool(delayed(_load_one)(c, sample_rate) for c in clips)
    kept = [a for a in loaded if a is not None and a.signal.size > 0]
    if len(kept) < len(clips):
        log(f"skipped {len(clips) - len(kept)} clip(s) that could not be decoded")
    return kept


def clip_windows(audio: _Audio, features: FeatureConfig) -> np.ndarray:
    """The windows the tagger would cut from this clip (evaluation uses exactly these)."""
    blocks = iter_window_blocks(
        [audio.signal], window=features.window_samples, hop=features.hop_samples, block=1 << 30
    )
    return np.concatenate(list(blocks))


def _random_window(audio: _Audio, labels: Sequence[str], features: FeatureConfig, rng: random.Random):
    size = features.window_samples
    n = audio.signal.size
    start = rng.randrange(0, n - size + 1) if n > size else 0
    # a clip shorter than a window is repeated to fill it, as the tagger does (tagger.windows)
    window = tile(audio.signal[start : start + size], size)
    t0 = audio.offset + start / features.sample_rate
    target = window_targets(audio.clip, labels, t0, t0 + size / features.sample_rate)
    return window, target


NOISE_SNR_DB = (10.0, 45.0)  # noise level below the window's RMS
NOISE_FLOOR_DBFS = (-70.0, -50.0)  # and an absolute floor, so silent windows hiss too


def coloured(white: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """``white`` noise ``[batch, samples]`` shaped to a 1/f^alpha power spectrum per row
    (``alpha`` ``[batch, 1]``: 0 white, 1 pink, 2 brown), scaled to unit RMS."""
    n = white.shape[-1]
    freqs = torch.fft.rfftfreq(n, device=white.device).clamp(min=1.0 / n)
    noise = torch.fft.irfft(torch.fft.rfft(white) * freqs[None, :] ** (-alpha / 2), n)
    return noise / noise.pow(2).mean(1, keepdim=True).sqrt().clamp(min=1e-12)


def _uniform(x: torch.Tensor, lo: float, hi: float, generator: torch.Generator | None) -> torch.Tensor:
    """One draw in [lo, hi) per window of ``x`` ``[batch, samples]``, as ``[batch, 1]`` on its device."""
    return lo + (hi - lo) * torch.rand(len(x), 1, generator=generator, device=x.device)


def add_noise(x: torch.Tensor, prob: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Background noise on a ``prob`` share of windows ``[batch, samples]``, labels unchanged.

    Renders are digitally clean; real recordings carry room tone, hiss and hum. Without this a
    model learns that broadband noise means drums (default 4 on validation renders with pink
    noise 20 dB down: drums on half the clips without drums, against 8 % clean). The noise is
    coloured 1/f^a with a in [0, 2] (white to brown), at a random SNR, plus a random floor."""
    if prob <= 0:
        return x
    batch, n = x.shape
    dev = x.device
    def uniform(lo: float, hi: float) -> torch.Tensor:
        return _uniform(x, lo, hi, generator)
    noise = coloured(torch.randn(batch, n, generator=generator, device=dev), uniform(0.0, 2.0))
    rms = x.pow(2).mean(1, keepdim=True).sqrt()
    level = rms * 10 ** (-uniform(*NOISE_SNR_DB) / 20) + 10 ** (uniform(*NOISE_FLOOR_DBFS) / 20)
    chosen = (torch.rand(batch, 1, generator=generator, device=dev) < prob).to(x.dtype)
    return x + chosen * level * noise


TILT_DB = (-12.0, 12.0)  # treble shelf gain
TILT_CORNER_HZ = (2000.0, 5000.0)


def add_tilt(x: torch.Tensor, prob: float, sample_rate: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A random treble shelf on a ``prob`` share of windows ``[batch, samples]``, labels unchanged.

    Close-miked real instruments are brighter than our rendered ones, and default 5 heard
    drums in whatever is bright above 4 kHz: on three real strummed guitars it calls drums at
    0.75-0.97, and 0.02-0.03 once they are low-passed at 4 kHz (bench/drum_cues.py); a +12 dB
    shelf on drum-free rendered strums raises its drums from 16 % to 40 % of clips. Bright
    windows without drums and dull windows with drums break that shortcut on renders; on the
    real strums it did not (stage N in the model card)."""
    if prob <= 0:
        return x
    chosen = _uniform(x, 0.0, 1.0, generator).flatten() < prob
    gains, corners = _uniform(x, *TILT_DB, generator), _uniform(x, *TILT_CORNER_HZ, generator)
    out = x.clone()
    for i in torch.nonzero(chosen).flatten().tolist():
        out[i] = AF.treble_biquad(x[i], sample_rate, float(gains[i]), central_freq=float(corners[i]))
    return out


def _clip_targets(audios: Sequence[_Audio], labels: Sequence[str]) -> np.ndarray:
    return np.array([[float(label in a.clip.labels) for label in labels] for a in audios], np.float32)


def predict_clips(model: TaggerModel, audios: Sequence[_Audio], device: torch.device) -> list[np.ndarray]:
    """Per-clip window probabilities ``[windows, labels]``, cut and batched exactly as the
    tagger does (its BatchRunner: same inference network, batches mixed across clips)."""
    runner = BatchRunner(model, device)
    pieces: dict[int, list[np.ndarray]] = {i: [] for i in range(len(audios))}
    for i, audio in enumerate(audios):
        for clip, probs in runner.add(i, clip_windows(audio, model.features)):
            pieces[clip].append(probs)
    for clip, probs in runner.flush():
        pieces[clip].append(probs)
    return [np.concatenate(pieces[i]) for i in range(len(audios))]


def score_clips(window_probs: Sequence[np.ndarray], method: str, topk: int = 3) -> np.ndarray:
    return np.stack([aggregate(p, method, topk=topk) for p in window_probs])


def _pos_weight(audios: Sequence[_Audio], labels: Sequence[str]) -> torch.Tensor:
    """sqrt(neg/pos) per class, clipped: rare labels count more without exploding."""
    targets = _clip_targets(audios, labels)
    pos = targets.sum(axis=0)
    neg = len(targets) - pos
    return torch.tensor(np.clip(np.sqrt((neg + 1) / (pos + 1)), 1.0, 8.0), dtype=torch.float32)


def _lr_at(step: int, total: int, warmup: int, base: float) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))



# Validation clips are ~10 s but tagged tracks last minutes: "max" over 100+ windows fires
# far more often than over 6, so only length-robust aggregations are chosen for shipping.
SHIPPED_AGGREGATIONS = ("mean", "topk")


def choose_aggregation(model: TaggerModel, val_audio: Sequence[_Audio], dev: torch.device) -> tuple[str, list[float], dict]:
    """Per aggregation, tune per-class thresholds on validation; keep the best macro F1."""
    targets = _clip_targets(val_audio, model.labels)
    window_probs = predict_clips(model, val_audio, dev)
    results = {}
    for method in SHIPPED_AGGREGATIONS:
        scores = score_clips(window_probs, method, model.topk)
        thresholds = tune_thresholds(targets, scores)
        results[method] = (thresholds, evaluate(targets, scores, model.labels, thresholds))
    method = max(results, key=lambda m: (results[m][1]["macro_f1"], results[m][1]["map"] or 0))
    return method, *results[method]


@dataclass
class TeacherData:
    """Real-audio windows at the model rate and their calibrated teacher targets."""

    windows: np.ndarray  # [N, window_samples] float32
    targets: np.ndarray  # [N, labels] in [0, 1]
    info: dict = field(default_factory=dict)  # what the checkpoint records about the teacher
    classes: np.ndarray | None = None  # [N, teacher classes] raw probabilities (for teacher_classes)


@dataclass
class _Optimisation:
    """What stays the same from one training step to the next."""
    model: TaggerModel
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    masks: Sequence[torch.nn.Module]  # SpecAugment, applied in order
    config: TrainConfig
    total_steps: int
    steps_per_epoch: int
    device: torch.device
    domain_head: DomainHead | None = None  # with domain data: render-vs-real discriminator
    domain_hits: list[float] = field(default_factory=list)  # its accuracy per batch, this epoch
    class_head: torch.nn.Module | None = None  # with teacher_classes: pooled features -> teacher classes


def _train_step(opt: _Optimisation, global_step: int, train_audio: Sequence[_Audio], rng: random.Random,
                teacher: TeacherData | None = None, by_source: Sequence[Sequence[_Audio]] | None = None,
                domain: DomainData | None = None) -> float:
    """One batch: random windows, mixup, background noise, random gain, SpecAugment, AdamW step.
    With a teacher, ``teacher_fraction`` of the batch are real windows with soft targets. With
    domain data, ``domain_fraction`` are real windows without targets that only the
    render-vs-real discriminator sees (through gradient reversal, train.domain)."""
    model, config, dev = opt.model, opt.config, opt.device
    for group in opt.optimizer.param_groups:
        group["lr"] = _lr_at(global_step, opt.total_steps, config.warmup_epochs * opt.steps_per_epoch, config.lr)
    n_teacher = int(round(config.batch_size * config.teacher_fraction)) if teacher is not None else 0
    n_real = int(round(config.batch_size * config.domain_fraction)) if domain is not None else 0
    def pick() -> _Audio:  # balanced: a small source (one font family) weighs as much as a big one
        return rng.choice(rng.choice(by_source)) if by_source else rng.choice(train_audio)

    pairs = [_random_window(pick(), model.labels, model.features, rng) for _ in range(config.batch_size - n_teacher - n_real)]
    x = torch.from_numpy(np.stack([p[0] for p in pairs])).to(dev)
    y = torch.from_numpy(np.stack([p[1] for p in pairs])).to(dev)
    if rng.random() < config.mixup:
        # Multi-label mixup: both mixes' instruments sound, so the targets unite.
        perm = torch.randperm(len(x), device=dev)
        lam = torch.empty(len(x), 1, device=dev).uniform_(0.3, 0.7)
        x = lam * x + (1 - lam) * x[perm]
        y = torch.maximum(y, y[perm])
    x = add_tilt(x, config.tilt, model.features.sample_rate)  # rendered windows only, like the noise
    x = add_noise(x, config.noise)  # rendered windows only: teacher windows are real recordings
    if n_teacher:
        taught = [rng.randrange(len(teacher.windows)) for _ in range(n_teacher)]
        x = torch.cat([x, torch.from_numpy(teacher.windows[taught]).to(dev)])
        y = torch.cat([y, torch.from_numpy(teacher.targets[taught]).to(dev)])
    distil = n_teacher > 0 and opt.class_head is not None
    if n_real:
        drawn = [rng.randrange(len(domain.windows)) for _ in range(n_real)]
        x = torch.cat([x, torch.from_numpy(domain.windows[drawn]).to(dev)])
    x = x * torch.empty(len(x), 1, device=dev).uniform_(0.25, 1.5)  # random gain
    with torch.autocast(dev.type, enabled=opt.scaler.is_enabled(), dtype=torch.float16):
        spec = model.front(x)
        if config.spec_augment:
            for mask in opt.masks:
                spec = mask(spec)
        if n_real or distil:
            features = model.network.embed(spec)
            loss = opt.loss_fn(model.network.head(features[:len(x) - n_real]).float(), y)
        else:
            loss = opt.loss_fn(model.network(spec).float(), y)
        if distil:  # the teacher windows sit right after the rendered ones
            class_logits = opt.class_head(features[len(pairs):len(pairs) + n_teacher]).float()
            class_targets = torch.from_numpy(teacher.classes[taught].astype(np.float32)).to(dev)
            loss = loss + config.teacher_classes * torch.nn.functional.binary_cross_entropy_with_logits(class_logits, class_targets)
        if n_real:
            # Real: the domain windows and any teacher windows; rendered: the rest.
            is_real = torch.zeros(len(x), device=dev)
            is_real[len(pairs):] = 1.0
            weight = config.domain_weight * ramp(global_step / max(1, opt.total_steps))
            domain_logits = opt.domain_head(reverse_gradient(features, weight)).float()
            loss = loss + torch.nn.functional.binary_cross_entropy_with_logits(domain_logits, is_real)
            opt.domain_hits.append(((domain_logits > 0).float() == is_real).float().mean().item())
    opt.optimizer.zero_grad(set_to_none=True)
    opt.scaler.scale(loss).backward()
    opt.scaler.step(opt.optimizer)
    opt.scaler.update()
    return loss.item()


def train_model(
    clips: Sequence[Clip],
    labels: Sequence[str],
    *,
    out: str | os.PathLike,
    config: TrainConfig | None = None,
    features: FeatureConfig | None = None,
    validation_clips: Sequence[Clip] | None = None,
    device: str = "auto",
    jobs: int = 2,
    resume: bool = False,
    progress: bool = False,
    log: Log = print,
    teacher: TeacherData | None = None,
    init: TaggerModel | None = None,
    domain: DomainData | None = None,
) -> TaggerModel:
    """Train on ``clips`` (validation split by group unless given) and write ``out``.
    ``teacher``: real windows with teacher targets mixed into every batch (validation,
    checkpoint choice and thresholds still use the labelled validation clips only).
    ``init``: start from this model's weights (same architecture, labels and features).
    ``domain``: real, unlabelled windows for render-vs-real invariance (train.domain)."""
    config = config or TrainConfig()
    features = features or FeatureConfig()
    labels = list(labels)
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    rng = random.Random(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    dev = pick_device(device)

    if validation_clips is None:
        clips, validation_clips = split_clips(clips, validation=config.validation, seed=config.seed)
    if not clips or not validation_clips:
        raise ValueError("need training and validation clips (got %d and %d)" % (len(clips), len(validation_clips or [])))
    t0 = time.perf_counter()
    train_audio = load_audio(clips, features.sample_rate, jobs=jobs, log=log)
    val_audio = load_audio(validation_clips, features.sample_rate, jobs=jobs, log=log)
    log(f"decoded {len(train_audio)} training and {len(val_audio)} validation clips in {time.perf_counter() - t0:.0f} s")

    grow, init_note = False, None  # a tagnet init with narrower stages than asked for is widened (train.widen)
    if init is not None:
        config.arch_args = dict(config.arch_args or init.arch_args)
        widths = [list(args.get("widths", TAGNET_WIDTHS)) for args in (init.arch_args, config.arch_args)]
        grow = init.arch == config.arch == "tagnet" and widths[0] != widths[1]
        if (init.arch, init.labels, init.features) != (config.arch, labels, features) or (
                dict(init.arch_args) != config.arch_args and not grow):
            raise ValueError("init model: its architecture, labels or features differ from this training's")
        init_note = f"{init.model_id} ({init.path})"
        if grow:
            init_note += f", widened from {widths[0]} to {widths[1]} channels"
            log(f"init {init_note} (same outputs to start with)")
    model = new_model(labels, arch=config.arch, arch_args=config.arch_args, features=features, name=config.name, version=config.version)
    if init is not None:
        source = widen_tagnet(init.network, features.n_mels, len(labels), widths[1], seed=config.seed) if grow else init.network
        model.network.load_state_dict(source.state_dict())
    model.to(dev)
    net = model.network
    domain_head = class_head = None
    distil = teacher is not None and config.teacher_classes > 0
    if distil and teacher.classes is None:
        raise ValueError("teacher_classes needs the teacher's class scores")
    if domain is not None or distil:
        if not hasattr(net, "embed"):
            raise ValueError(f"domain-adversarial training and teacher classes need the tagnet architecture, not {config.arch}")
        with torch.no_grad():
            width = net.embed(model.front(torch.zeros(1, features.window_samples, device=dev))).shape[1]
        domain_head = DomainHead(width).to(dev) if domain is not None else None
        class_head = torch.nn.Linear(width, teacher.classes.shape[1]).to(dev) if distil else None
    heads = [h for h in (domain_head, class_head) if h is not None]  # training only: not in the checkpoint
    trained = list(net.parameters()) + [p for h in heads for p in h.parameters()]
    optimizer = torch.optim.AdamW(trained, lr=config.lr, weight_decay=config.weight_decay)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=_pos_weight(train_audio, labels).to(dev))
    freq_mask = torchaudio.transforms.FrequencyMasking(freq_mask_param=max(1, features.n_mels // 8), iid_masks=True)
    time_mask = torchaudio.transforms.TimeMasking(time_mask_param=max(1, features.n_frames // 8), iid_masks=True)
    scaler = torch.amp.GradScaler("cuda", enabled=dev.type == "cuda")  # AMP on CUDA only

    steps_per_epoch = config.steps_per_epoch or max(1, math.ceil(len(train_audio) / config.batch_size))
    total_steps = steps_per_epoch * config.epochs
    state_path = Path(f"{out}.state")
    start_epoch, best_map, best_epoch, history = 0, -1.0, -1, []
    if resume and state_path.is_file():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        net.load_state_dict(state["network"])
        if domain_head is not None:
            domain_head.load_state_dict(state["domain_head"])
        if class_head is not None:
            class_head.load_state_dict(state["class_head"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, best_map, best_epoch = state["epoch"] + 1, state["best_map"], state["best_epoch"]
        history = list(state["history"])
        rng.seed(config.seed + start_epoch)
        log(f"resumed from {state_path} at epoch {start_epoch}")

    opt = _Optimisation(model, optimizer, scaler, loss_fn, (freq_mask, time_mask), config, total_steps,
                        steps_per_epoch, dev, domain_head, class_head=class_head)
    val_targets = _clip_targets(val_audio, labels)
    by_source = None
    if config.balance_sources:
        groups: dict[str, list[_Audio]] = {}
        for a in train_audio:
            groups.setdefault(a.clip.source, []).append(a)
        by_source = [groups[k] for k in sorted(groups)]
        log("balanced sources: " + ", ".join(f"{k} {len(groups[k])}" for k in sorted(groups)))
    bar = Progress(TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   console=Console(stderr=True), transient=True, disable=not progress)
    for epoch in range(start_epoch, config.epochs):
        net.train()
        epoch_loss, t_epoch = 0.0, time.perf_counter()
        with bar:
            task = bar.add_task("train", total=steps_per_epoch, epoch=epoch + 1)
            for step in range(steps_per_epoch):
                bar.advance(task)
                epoch_loss += _train_step(opt, epoch * steps_per_epoch + step, train_audio, rng, teacher, by_source, domain)
            bar.remove_task(task)
        domain_accuracy = float(np.mean(opt.domain_hits)) if opt.domain_hits else None
        opt.domain_hits.clear()

        window_probs = predict_clips(model, val_audio, dev)
        val_map = max(
            evaluate(val_targets, score_clips(window_probs, m, model.topk), labels, [0.5] * len(labels))["map"] or 0.0
            for m in SHIPPED_AGGREGATIONS
        )
        history.append({"epoch": epoch, "loss": epoch_loss / steps_per_epoch, "val_map": val_map,
                        **({"domain_accuracy": round(domain_accuracy, 4)} if domain_accuracy is not None else {})})
        improved = val_map > best_map
        if improved:
            best_map, best_epoch = val_map, epoch
            save_checkpoint(model, f"{out}.best")
        log(
            f"epoch {epoch + 1}/{config.epochs}: loss {epoch_loss / steps_per_epoch:.4f}, "
            f"val mAP {val_map:.3f}{' *' if improved else ''}"
            + (f", render-vs-real accuracy {domain_accuracy:.2f}" if domain_accuracy is not None else "")
            + f" ({time.perf_counter() - t_epoch:.0f} s)"
        )
        state = {"network": net.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
                 "best_map": best_map, "best_epoch": best_epoch, "history": history}
        if domain_head is not None:
            state["domain_head"] = domain_head.state_dict()
        if class_head is not None:
            state["class_head"] = class_head.state_dict()
        tmp = state_path.with_name(state_path.name + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, state_path)
        if epoch - best_epoch >= config.patience:
            log(f"early stop: no validation mAP gain for {config.patience} epochs")
            break

    # Finish from the best epoch: choose aggregation and thresholds on validation.
    from tagger.model import load_model

    best = load_model(f"{out}.best").to(dev)
    method, thresholds, metrics = choose_aggregation(best, val_audio, dev)
    best.aggregation, best.thresholds = method, thresholds
    best.metrics = {"validation": metrics}
    best.training = {
        "config": {k: v for k, v in vars(config).items()},
        "init": init_note,
        "train_clips": len(train_audio),
        "teacher": teacher.info if teacher is not None else None,
        "domain": domain.info if domain is not None else None,
        "validation_clips": len(val_audio),
        "best_epoch": best_epoch + 1,
        "history": history,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    save_checkpoint(best, out)
    Path(f"{out}.best").unlink(missing_ok=True)
    state_path.unlink(missing_ok=True)
    log(f"saved {out}: aggregation {method}, validation macro F1 {metrics['macro_f1']:.3f}, mAP {metrics['map'] or 0:.3f}")
    return best


def evaluate_model(model: TaggerModel, clips: Sequence[Clip], *, device: str = "auto", jobs: int = 2, log: Log = print) -> dict:
    """Clip-level metrics with the model's own aggregation and thresholds."""
    dev = pick_device(device)
    model.to(dev)
    audios = load_audio(clips, model.features.sample_rate, jobs=jobs, log=log)
    if not audios:
        raise ValueError("no decodable clips to evaluate")
    scores = score_clips(predict_clips(model, audios, dev), model.aggregation, model.topk)
    return evaluate(_clip_targets(audios, model.labels), scores, model.labels, model.thresholds)
