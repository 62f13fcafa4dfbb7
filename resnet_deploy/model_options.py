"""The zoo's names and choices without importing torch, so the CLI loads on engine-only hosts."""

MODEL_NAMES = (
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "preact_resnet18",
    "preact_resnet34",
    "preact_resnet50",
    "preact_resnet101",
    "preact_resnet152",
)
SHORTCUTS = ("A", "B", "C")
STEMS = ("small", "imagenet")
