"""EfficientAT "mn04": an AudioSet-trained MobileNetV3 (width 0.4), its 32 kHz front end,
and the table mapping its 527 AudioSet classes onto our labels.

Written for this project from the published description of the model (MobileNetV3-Large
block table, EfficientAT's mel front end); the weights are the user's own download
(``tagger models download efficientat-mn04``, MIT licence, (c) 2022 Florian Schmid).
The module layout mirrors the upstream state dict so that it loads with strict key
matching: ``features.0`` stem, ``features.1``-``features.15`` inverted residual blocks
(``block.N``), ``features.16`` last 1x1 conv, ``classifier``.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torchaudio
from torch import nn

from tagger.features import FeatureConfig

FRONTEND = "efficientat"  # FeatureConfig.frontend value of this front end
ARCH = "efficientat_mn"  # tagger architecture name
SAMPLE_RATE = 32000
N_FFT = 1024
HOP_LENGTH = 320
WIN_LENGTH = 800  # symmetric Hann window, zero-padded by torch.stft to n_fft
N_MELS = 128
F_MIN = 0.0
F_MAX = 15000.0
PREEMPHASIS = 0.97
LOG_OFFSET = 1e-5
# The network was trained on (log mel + 4.5) / 5: roughly zero-mean, unit-scale inputs.
NORM_SHIFT, NORM_SCALE = 4.5, 5.0
N_CLASSES = 527
WIDTH_MULT = 0.4
EMBEDDING_DIM = 384
BN_EPS = 1e-3  # MobileNetV3's BatchNorm settings (torchvision uses the same)
BN_MOMENTUM = 0.01

# AudioSet class index (audioset_class_labels_indices.csv) -> our labels, in the order of
# train.taxonomy.LABELS (a test checks both). A label's logit is the highest logit among
# its classes, so its sigmoid is the highest class probability. Indices checked against
# the class list: 153 Piano, 154 Electric piano, 160 Harpsichord; 155 Organ, 156
# Electronic organ, 157 Hammond organ; 143 Acoustic guitar; 141 Electric guitar, 144
# Steel guitar, slide guitar; 142 Bass guitar, 194 Double bass; 189 Bowed string
# instrument, 190 String section, 192 Pizzicato; 191 Violin, fiddle; 193 Cello; 185 Brass
# instrument, 186 French horn, 188 Trombone; 187 Trumpet; 197 Saxophone; 198 Clarinet;
# 196 Flute; 158 Synthesizer; 178 Tubular bells, 179 Mallet percussion, 180 Marimba,
# xylophone, 181 Glockenspiel, 182 Vibraphone; 162 Drum kit, 163 Drum machine, 164 Drum,
# 165 Snare drum, 168 Bass drum, 171 Cymbal, 172 Hi-hat.
AUDIOSET_LABEL_MAP: dict[str, tuple[int, ...]] = {
    "piano": (153, 154, 160),
    "organ": (155, 156, 157),
    "acoustic guitar": (143,),
    "electric guitar": (141, 144),
    "bass": (142, 194),
    "strings": (189, 190, 192),
    "violin": (191,),
    "cello": (193,),
    "brass": (185, 186, 188),
    "trumpet": (187,),
    "saxophone": (197,),
    "clarinet": (198,),
    "flute": (196,),
    "synth": (158,),
    "mallets": (178, 179, 180, 181, 182),
    "drums": (162, 163, 164, 165, 168, 171, 172),
}
LABELS: tuple[str, ...] = tuple(AUDIOSET_LABEL_MAP)


def feature_config(hop_seconds: float = 3.0, window_seconds: float = 3.0) -> FeatureConfig:
    """The FeatureConfig that selects this front end, on 3-s windows (mn04 learned from AudioSet's
    10-s clips, but 10-s windows did not tag our real recordings better: model card, stage U)."""
    return FeatureConfig(
        frontend=FRONTEND, sample_rate=SAMPLE_RATE, window_seconds=window_seconds, hop_seconds=hop_seconds,
        n_fft=N_FFT, hop_length=HOP_LENGTH, n_mels=N_MELS, f_min=F_MIN, f_max=F_MAX,
    )


class EfficientATMel(nn.Module):
    """Waveforms ``[batch, samples]`` at 32 kHz -> ``[batch, 1, 128, frames]``: pre-emphasis,
    power STFT, Kaldi-style mel banks, ``(log(mel + 1e-5) + 4.5) / 5``."""

    def __init__(self, config: FeatureConfig | None = None):
        super().__init__()
        config = config or feature_config()
        if config.sample_rate != SAMPLE_RATE:
            raise ValueError(f"the EfficientAT front end runs at {SAMPLE_RATE} Hz, not {config.sample_rate}")
        self.n_fft, self.hop_length = config.n_fft, config.hop_length
        banks, _ = torchaudio.compliance.kaldi.get_mel_banks(
            config.n_mels, config.n_fft, float(config.sample_rate), config.f_min, config.f_max, 100.0, -500.0, 1.0
        )
        # Kaldi banks cover n_fft/2 bins; the STFT has n_fft/2 + 1 (Nyquist gets weight 0).
        self.register_buffer("mel_banks", nn.functional.pad(banks, (0, 1)), persistent=False)
        self.register_buffer("window", torch.hann_window(WIN_LENGTH, periodic=False), persistent=False)

    def frames(self, n_samples: int) -> int:
        return (n_samples - 1) // self.hop_length + 1

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=waveforms.device.type, enabled=False):
            x = waveforms.float()
            x = x[:, 1:] - PREEMPHASIS * x[:, :-1]  # one sample shorter, as upstream's 2-tap conv
            spec = torch.stft(
                x, self.n_fft, hop_length=self.hop_length, win_length=WIN_LENGTH, window=self.window,
                center=True, pad_mode="reflect", return_complex=True,
            )
            power = spec.real.square() + spec.imag.square()
            mel = torch.matmul(self.mel_banks, power)
            mel = (torch.log(mel + LOG_OFFSET) + NORM_SHIFT) / NORM_SCALE
        return mel.unsqueeze(1)


def _divisible(value: float, divisor: int = 8) -> int:
    """Round channels to a multiple of 8, never more than 10 % below the scaled value
    (MobileNet's rule; it gives the widths the mn04 weights have)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _conv_bn_act(in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1,
                 act: type[nn.Module] | None = nn.ReLU) -> nn.Sequential:
    # A plain Conv2d -> BatchNorm2d pair inside a Sequential: TaggerModel.inference_network
    # folds such pairs.
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch, eps=BN_EPS, momentum=BN_MOMENTUM),
    ]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class _ChannelSE(nn.Module):
    """Squeeze-excitation over channels: mean over (freq, time) -> fc -> ReLU -> fc ->
    sigmoid -> channel gains. (EfficientAT gates with a plain sigmoid where torchvision
    uses a hard one; checked against the reference outputs.)"""

    def __init__(self, channels: int, squeezed: int):
        super().__init__()
        self.fc1 = nn.Linear(channels, squeezed)
        self.fc2 = nn.Linear(squeezed, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gain = torch.sigmoid(self.fc2(nn.functional.relu(self.fc1(x.mean(dim=(2, 3))))))
        return x * gain[:, :, None, None]


class _SE(nn.Module):
    """Container named as upstream (``conc_se_layers.0``); mn04 uses the channel SE alone."""

    def __init__(self, channels: int, squeezed: int):
        super().__init__()
        self.conc_se_layers = nn.ModuleList([_ChannelSE(channels, squeezed)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conc_se_layers[0](x)


class _InvertedResidual(nn.Module):
    """Expand 1x1 (skipped when it would not widen) -> depthwise kxk -> [SE] -> project 1x1,
    with a residual connection when the shape is kept."""

    def __init__(self, in_ch: int, kernel: int, expanded: int, out_ch: int, se: bool, act: type[nn.Module], stride: int):
        super().__init__()
        layers: list[nn.Module] = []
        if expanded != in_ch:
            layers.append(_conv_bn_act(in_ch, expanded, 1, act=act))
        layers.append(_conv_bn_act(expanded, expanded, kernel, stride, groups=expanded, act=act))
        if se:
            layers.append(_SE(expanded, _divisible(expanded // 4)))
        layers.append(_conv_bn_act(expanded, out_ch, 1, act=None))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.residual else y


_RE, _HS = nn.ReLU, nn.Hardswish
# MobileNetV3-Large (Howard et al. 2019, table 1; torchvision's settings), before width
# scaling: input, kernel, expanded, output channels, squeeze-excitation, activation, stride.
_LARGE_BLOCKS: tuple[tuple[int, int, int, int, bool, type[nn.Module], int], ...] = (
    (16, 3, 16, 16, False, _RE, 1),
    (16, 3, 64, 24, False, _RE, 2),
    (24, 3, 72, 24, False, _RE, 1),
    (24, 5, 72, 40, True, _RE, 2),
    (40, 5, 120, 40, True, _RE, 1),
    (40, 5, 120, 40, True, _RE, 1),
    (40, 3, 240, 80, False, _HS, 2),
    (80, 3, 200, 80, False, _HS, 1),
    (80, 3, 184, 80, False, _HS, 1),
    (80, 3, 184, 80, False, _HS, 1),
    (80, 3, 480, 112, True, _HS, 1),
    (112, 3, 672, 112, True, _HS, 1),
    (112, 5, 672, 160, True, _HS, 2),
    (160, 5, 960, 160, True, _HS, 1),
    (160, 5, 960, 160, True, _HS, 1),
)
_HEAD_HIDDEN = 512  # EfficientAT's classifier hidden width (torchvision's ImageNet model: 1280)


class MobileNetAT(nn.Module):
    """The AudioSet network: ``[B, 1, 128, T]`` -> (527 class logits, 384-d embedding)."""

    def __init__(self, width_mult: float = WIDTH_MULT, n_classes: int = N_CLASSES, dropout: float = 0.2):
        super().__init__()
        scale = lambda ch: _divisible(ch * width_mult)  # noqa: E731
        layers: list[nn.Module] = [_conv_bn_act(1, scale(16), 3, stride=2, act=_HS)]
        for in_ch, kernel, expanded, out_ch, se, act, stride in _LARGE_BLOCKS:
            layers.append(_InvertedResidual(scale(in_ch), kernel, scale(expanded), scale(out_ch), se, act, stride))
        last = scale(_LARGE_BLOCKS[-1][3]) * 6
        layers.append(_conv_bn_act(scale(_LARGE_BLOCKS[-1][3]), last, 1, act=_HS))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(last, _HEAD_HIDDEN), nn.Hardswish(),
            nn.Dropout(dropout), nn.Linear(_HEAD_HIDDEN, n_classes),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.classifier[:2](self.features(x))
        return self.classifier[2:](embedding), embedding


def _index_table(class_map: Sequence[Sequence[int]]) -> torch.Tensor:
    """``[labels, K]`` class indices; shorter groups repeat their first index (a max is
    indifferent to duplicates), so one gather + amax does every label at once."""
    width = max(len(group) for group in class_map)
    return torch.tensor([list(group) + [group[0]] * (width - len(group)) for group in class_map], dtype=torch.long)


def label_logits(audioset_logits: torch.Tensor, class_map: Sequence[Sequence[int]] | torch.Tensor) -> torch.Tensor:
    """``[B, 527]`` -> ``[B, labels]``: per label, the highest logit among its classes."""
    table = class_map if isinstance(class_map, torch.Tensor) else _index_table(class_map)
    table = table.to(audioset_logits.device)
    return audioset_logits[:, table].amax(dim=-1)


class EfficientATNet(nn.Module):
    """The tagger architecture ``efficientat_mn``: spectrogram -> per-label logits.

    The AudioSet network is ``self.net`` (state dict keys ``net.*``); the class map is a
    constructor argument, stored in the checkpoint's ``arch_args``.
    """

    def __init__(self, n_mels: int, n_labels: int, class_map: Sequence[Sequence[int]] | None = None,
                 width_mult: float = WIDTH_MULT, n_classes: int = N_CLASSES):
        super().__init__()
        if n_mels != N_MELS:
            raise ValueError(f"{ARCH} needs {N_MELS} mel bands, not {n_mels}")
        class_map = [list(g) for g in (class_map if class_map is not None else AUDIOSET_LABEL_MAP.values())]
        if len(class_map) != n_labels or not all(class_map):
            raise ValueError(f"{ARCH}: class map has {len(class_map)} non-empty groups for {n_labels} labels")
        if any(not 0 <= i < n_classes for group in class_map for i in group):
            raise ValueError(f"{ARCH}: class index outside 0..{n_classes - 1}")
        self.net = MobileNetAT(width_mult, n_classes)
        self.register_buffer("class_table", _index_table(class_map), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return label_logits(self.net(x)[0], self.class_table)


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The upstream weights file (a plain state dict), loaded safely."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} is not a state dict")
    return state


class Mn04(nn.Module):
    """Front end + network in one module, for use outside the tagging pipeline (e.g. as a
    teacher): ``Mn04.from_file(path)(waveforms_32k)`` -> ``[B, 16]`` label logits."""

    def __init__(self, class_map: Sequence[Sequence[int]] | None = None):
        super().__init__()
        self.front = EfficientATMel()
        class_map = list(class_map if class_map is not None else AUDIOSET_LABEL_MAP.values())
        self.network = EfficientATNet(N_MELS, len(class_map), class_map)
        self.labels: tuple[str, ...] = LABELS if class_map == list(AUDIOSET_LABEL_MAP.values()) else ()

    @classmethod
    def from_file(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> "Mn04":
        model = cls()
        model.network.net.load_state_dict(load_state_dict(path), strict=True)
        return model.to(device).eval()

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        return self.network(self.front(waveforms))

    def audioset(self, waveforms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, samples]`` -> (``[B, 527]`` AudioSet logits, ``[B, 384]`` embeddings)."""
        return self.network.net(self.front(waveforms))
