"""What every method shares and no method knows: files and hashing, devices and processes, configs
and the resume digest, checkpoints, the loss log, the one training loop (`loop.fit`), publishing a
run, and the way verbs are declared. Imports nothing else of the package."""
