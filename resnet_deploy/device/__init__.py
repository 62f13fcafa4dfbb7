"""What reaches a board: the bundle (`bundle`: format and verification; `make`: making it from the pipeline's
stages; `build`: `build --bundle` on the target), its DEVICE.md (`readme`), the torch-free wheel it carries
(`wheel`), DeepStream configs (`deepstream`) and the board fingerprint (`jetson`). The pipeline never imports
this package; it imports the pipeline."""
