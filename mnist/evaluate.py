"""Metrics of saved chains: ``python -m mnist.evaluate --samples DIR [DIR ...]``.

The digit classifier (:mod:`mnist.classifier`) is trained on the training split of the same
data on first use and kept at ``--classifier`` (default ``runs/mnist_classifier/…``). For each
sample directory written by ``mnist.sample`` (``chains.pt``), this writes ``metrics.json``:

* ``final``: confident fraction, predicted-digit entropy and histogram, Fréchet distance to
  held-out real digits in classifier-feature space (:mod:`mnist.metrics`) of the chain ends;
* ``trajectory``: digit switches per 1,000 steps (all / confident frames), per-frame confident
  fraction and digit entropy;
* ``energy`` (when the run directory is known): mean E_θ of chain starts, ends and held-out
  data, and the gap E(ends) − E(data);
* ``from_data`` (chains started on data): mean ℓ2 distance of ends from their starts and the
  share of chains whose predicted digit is still the label of their start.

``--reference`` writes the same metrics for real held-out digits (the values a perfect sampler
would get; the Fréchet distance train-vs-held-out is the sampling-error floor).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch import Tensor

from ebmref.cli import ArgumentParser, add_debug_argument, guarded
from ebmref.files import atomic_write_json, check_output_file
from ebmref.validation import check_int_range
from mnist.classifier import load_or_train_classifier
from mnist.data import MNISTData, add_data_arguments, data_from_args
from mnist.metrics import classify, mean_energy, sample_metrics, trajectory_metrics
from mnist.runs import load_chains, load_trained

METRICS_NAME = "metrics.json"


class Evaluator:
    """Holds the classifier and the held-out features; evaluates chains."""

    def __init__(self, train: MNISTData, heldout: MNISTData, classifier_path=None,
                 classifier_epochs: int = 8, classifier_max_images: int | None = None,
                 device: str = "cpu", verbose: bool = True):
        self.classifier, self.classifier_meta = load_or_train_classifier(
            train, heldout, classifier_path, epochs=classifier_epochs, device=device,
            max_images=classifier_max_images, verbose=verbose)
        self.heldout = heldout
        _, self.heldout_features = classify(self.classifier, heldout.images)

    def reference(self, train: MNISTData, n: int = 1000) -> dict:
        """Metrics of real digits: held-out images scored against held-out features would be
        trivially 0, so training images stand in for 'samples'."""
        g = torch.Generator().manual_seed(0)
        idx = torch.randperm(len(train), generator=g)[:n]
        out = sample_metrics(self.classifier, train.images[idx], self.heldout_features)
        out["source"] = f"{n} real training digits vs held-out ({self.heldout.source})"
        return out

    def chains(self, trajectory: Tensor, steps_per_frame: int, energy=None,
               start_labels: Tensor | None = None) -> dict:
        """Metrics of recorded chains ``trajectory`` (T, B, 1, 28, 28), frame 0 = starts."""
        final = trajectory[-1].float()
        out = {"final": sample_metrics(self.classifier, final, self.heldout_features),
               "trajectory": trajectory_metrics(self.classifier, trajectory.float(),
                                                steps_per_frame),
               "classifier": self.classifier_meta}
        if energy is not None:
            e_start = mean_energy(energy, trajectory[0].float())
            e_end = mean_energy(energy, final)
            e_data = mean_energy(energy, self.heldout.images)
            out["energy"] = {"start": e_start, "end": e_end, "heldout_data": e_data,
                             "gap_end_minus_data": e_end - e_data}
        if start_labels is not None:
            probs, _ = classify(self.classifier, final)
            start = trajectory[0].float().flatten(1)
            dist = (final.flatten(1) - start).norm(dim=1)
            out["from_data"] = {
                "mean_l2_from_start": float(dist.mean()),
                "same_digit_as_start": float((probs.argmax(-1) == start_labels.cpu())
                                             .double().mean()),
            }
        return out


def evaluate_sample_dir(evaluator: Evaluator, sample_dir: Path, energy=None) -> dict:
    chains = load_chains(sample_dir)
    meta = chains["meta"]
    metrics = evaluator.chains(chains["trajectory"], int(meta["record_every"]), energy,
                               chains.get("start_labels"))
    metrics["sampling"] = meta
    atomic_write_json(Path(sample_dir) / METRICS_NAME, metrics)
    return metrics


def summary_row(metrics: dict) -> dict:
    """The headline numbers of one metrics.json (for tables)."""
    f, t = metrics["final"], metrics["trajectory"]
    row = {"confident": f["confident_fraction"], "digit_entropy": f["digit_entropy"],
           "confident_digit_entropy": f.get("confident_digit_entropy"),
           "frechet": f.get("frechet_distance"),
           "switches_per_1k": t["switches_per_1k"],
           "confident_switches_per_1k": t["confident_switches_per_1k"]}
    if "energy" in metrics:
        row["energy_gap"] = metrics["energy"]["gap_end_minus_data"]
    if "from_data" in metrics:
        row["same_digit_as_start"] = metrics["from_data"]["same_digit_as_start"]
        row["l2_from_start"] = metrics["from_data"]["mean_l2_from_start"]
    return row


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m mnist.evaluate", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", nargs="*", default=[], help="mnist.sample output dirs")
    parser.add_argument("--reference", default=None,
                        help="write metrics of real digits to this JSON file")
    parser.add_argument("--classifier", default=None, help="classifier checkpoint path")
    parser.add_argument("--classifier-epochs", type=int, default=8,
                        help="epochs when the classifier has to be trained (default 8)")
    add_debug_argument(parser)
    add_data_arguments(parser)
    args = parser.parse_args(argv)
    return guarded(parser.prog, lambda: _run(args), debug=args.debug)


def _run(args: argparse.Namespace) -> int:
    check_int_range(args.classifier_epochs, "--classifier-epochs", 1)
    if args.reference:
        check_output_file(args.reference, "--reference")
    metas = {d: load_chains(d)["meta"] for d in args.samples}  # every input before any work
    train, heldout = data_from_args(args, "train"), data_from_args(args, "heldout")
    print("[classifier] loading or training the digit classifier", file=sys.stderr, flush=True)
    ev = Evaluator(train, heldout, args.classifier, args.classifier_epochs)
    if args.reference:
        ref = ev.reference(train)
        atomic_write_json(args.reference, ref)
        print(json.dumps(ref, allow_nan=False))
    for i, (d, meta) in enumerate(metas.items()):
        print(f"[evaluate {i + 1}/{len(metas)}] {d}", file=sys.stderr, flush=True)
        energy = load_trained(meta["run"])[0] if meta.get("run") else None
        m = evaluate_sample_dir(ev, Path(d), energy)
        print(d, json.dumps(summary_row(m)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
