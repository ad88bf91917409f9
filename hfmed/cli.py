"""`hfmed` command line: `hfmed demo`, `hfmed train RECIPE [key=value ...] [--resume latest]`."""

import argparse
import sys


def _demo(args) -> int:
    import torch
    from pydicom.data import get_testdata_file

    from . import ScopeformerForImageClassification, ScopeformerImageProcessor, scopeformer_config

    path = args.dicom or get_testdata_file("CT_small.dcm")
    torch.manual_seed(args.seed)
    config = scopeformer_config(args.preset)
    model = ScopeformerForImageClassification(config).eval()
    processor = ScopeformerImageProcessor(size={"height": config.image_size, "width": config.image_size})
    inputs = processor(path, return_tensors="pt")
    with torch.no_grad():
        probabilities = model(**inputs).logits.sigmoid()[0]
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"input: {path}")
    print(f"model: {args.preset} (random init, seed {args.seed}; {trainable / 1e6:.2f} M trainable parameters)")
    print("NOTE: random weights, so these numbers mean nothing clinically; research use only.")
    for label, p in zip(config.id2label.values(), probabilities.tolist(), strict=True):
        print(f"  {label:<18} {p:.3f}")
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["train"]:
        from .train import main as train_main

        return train_main(argv[1:])
    parser = argparse.ArgumentParser(prog="hfmed", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run a Scopeformer on a real CT slice and print per-label probabilities")
    demo.add_argument("--preset", default="scopeformer-efficient")
    demo.add_argument("--dicom", default=None, help="a CT DICOM file (default: pydicom's CT_small.dcm)")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)
    sub.add_parser("train", help="train from a YAML recipe (see `hfmed train --help`)")
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
