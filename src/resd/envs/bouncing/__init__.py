"""BouncingSim internals: scenes, the exact elastic model, the pymunk ground truth, the prompt,
the sandbox harness and the judge. The environments themselves live in `resd.envs.bouncingsim`."""
