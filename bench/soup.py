"""Average the weights of fine-tuned checkpoints of one lineage ("model soup").

    python bench/soup.py runs/soup.pt models/default.pt runs/s12-L.pt \
        --validation data/s12-samples data/s12-fonts data/s8-samples data/s8-fonts

Checkpoints fine-tuned from a common ancestor often lie in one basin, and the uniform average
of their weights (every tensor, BatchNorm statistics included) can generalise better under a
distribution shift than any one of them (Wortsman et al. 2022, "Model soups"; WiSE-FT). The
soup costs nothing at inference: same network, same speed. Training's last step is re-run on
it as the procedure it is: aggregation and per-label thresholds chosen on the validation
split of the given training folders (``train.datasets.split_clips``, seed 0, 15 %), which
for stage L's four folders is that run's own 510-clip split.
"""
from __future__ import annotations

import argparse

import torch

from tagger.infer import pick_device
from tagger.model import TaggerModel, load_model, save_checkpoint
from train.datasets import load_dataset, split_clips
from train.loop import choose_aggregation, load_audio


def soup(models: list[TaggerModel]) -> TaggerModel:
    """``models[0]``, its every tensor replaced (in place) by the mean of the models' tensors."""
    first = models[0]
    for other in models[1:]:
        if (other.arch, other.labels, other.features, dict(other.arch_args)) != (
            first.arch, first.labels, first.features, dict(first.arch_args)):
            raise ValueError(f"{other.path}: architecture, labels or features differ from {first.path}")
    states = [m.network.state_dict() for m in models]
    mean = {}
    for key, tensor in states[0].items():
        if tensor.is_floating_point():
            mean[key] = torch.stack([s[key] for s in states]).mean(dim=0)
        else:  # BatchNorm's num_batches_tracked: not used in eval mode
            mean[key] = tensor.clone()
    first.network.load_state_dict(mean)
    return first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="checkpoint to write")
    parser.add_argument("models", nargs="+", help="checkpoints to average (same architecture, labels, features)")
    parser.add_argument("--validation", nargs="+", required=True, help="training folders whose split chooses thresholds")
    parser.add_argument("--name", default="tagger-default")
    parser.add_argument("--model-version", default="soup")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    models = [load_model(path) for path in args.models]
    model = soup(models)
    labels = model.labels
    clips = [clip for root in args.validation for clip in load_dataset(root, labels=labels)]
    _, validation = split_clips(clips, validation=0.15, seed=0)
    device = pick_device(args.device)
    val_audio = load_audio(validation, model.features.sample_rate)
    model.to(device)
    method, thresholds, metrics = choose_aggregation(model, val_audio, device)
    model.aggregation, model.thresholds = method, thresholds
    model.name, model.version = args.name, args.model_version
    model.metrics = {"validation": metrics}
    model.training = {"soup": [f"{m.model_id} ({m.path})" for m in models], "validation_clips": len(val_audio)}
    save_checkpoint(model.to("cpu"), args.out)
    print(f"{args.out}: {len(models)} models, {len(val_audio)} validation clips, aggregation {method}, "
          f"validation micro-F1 {metrics['micro_f1']:.3f}, macro-F1 {metrics['macro_f1']:.3f}, mAP {metrics['map']:.3f}")


if __name__ == "__main__":
    main()
