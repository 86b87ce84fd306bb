"""``python -m cxr_utils.training_cli``: train and test one of the paper's models from the command
line, every default the paper's protocol (``config.PROTOCOL``). Explained in book/reproducibility.
"""

from __future__ import annotations

import argparse
import sys

from cxr_utils import config as facts
from cxr_utils import command, data, models
from cxr_utils.config import PROTOCOL
from cxr_utils.training import TrainingConfig, run_experiment
from cxr_utils.report import DISCLAIMER


def command_line() -> argparse.ArgumentParser:
    """``python -m cxr_utils.training_cli``'s arguments; every default is the paper's protocol."""
    parser = command.parser(
        "cxr_utils.training_cli", "Train and test one of the paper's models on a seeded, balanced sample.",
        "0 trained and tested; 2 bad arguments, a dataset or weights that cannot be used: nothing trained.",
    )
    parser.add_argument("--data-dir", help="dataset folder (default: download from Kaggle)")
    parser.add_argument("--model", choices=list(facts.REGISTRY), default="resnet50_lstm")
    parser.add_argument("--n-per-class", type=int, default=PROTOCOL.n_per_class)
    parser.add_argument("--epochs", type=int, default=PROTOCOL.epochs)
    parser.add_argument("--batch-size", type=int, default=PROTOCOL.batch_size)
    parser.add_argument("--seed", type=int, default=PROTOCOL.seed)
    parser.add_argument("--image-size", type=int, default=PROTOCOL.image_size,
                        help=f"images' side in px (default {PROTOCOL.image_size}, the paper's); smaller runs faster "
                             "and is no longer the paper's protocol")
    parser.add_argument("--weights", default=PROTOCOL.weights, type=facts.parse_weights,
                        help="imagenet | none | path to a local copy of the ImageNet weights")
    parser.add_argument("--recompute-batchnorm-images", type=int, metavar="N",
                        default=TrainingConfig.recompute_batchnorm_images,
                        help="this project's remedy, not the paper's: before every validation, recompute "
                             "BatchNorm's moving statistics from N seeded training images (default 0: the "
                             "paper's protocol; TrainingConfig.recompute_batchnorm_images)")
    parser.add_argument("--results-dir", default="results/training")
    parser.add_argument("--cache-dir", default=".cache/images")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = command_line().parse_args(argv)
    try:
        config = TrainingConfig(epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                                recompute_batchnorm_images=args.recompute_batchnorm_images)
        layout = data.resolve_dataset(args.data_dir)
        manifest = data.add_duplicate_groups(data.build_manifest(layout))
        sample = data.sample_balanced(manifest, args.n_per_class, seed=args.seed)
        split = data.split_dataset(sample, seed=args.seed)
        outcome = run_experiment(
            args.model, split, args.results_dir, config,
            model_options={"weights": args.weights}, cache_dir=args.cache_dir, image_size=args.image_size,
        )
    except (data.DatasetError, models.WeightsUnavailableError, ValueError) as error:
        return command.fail(error, command.EXIT_USAGE)
    test = outcome["metrics"]
    print(
        f"{args.model}: best epoch {outcome['result'].best_epoch}, test accuracy "
        f"{test['accuracy']:.3f} on {test['n']} images; results in {outcome['results_dir']}"
    )
    print(DISCLAIMER)
    return command.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
