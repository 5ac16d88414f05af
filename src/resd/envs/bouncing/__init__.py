"""BouncingSim internals: scenes, the Box2D ground truth, the exact polygon reference solver, the
prompt, the sandbox harness and the judge. The environments themselves live in `resd.envs.bouncingsim`."""
