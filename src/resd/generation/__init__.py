"""Generation: resd's own batched HF sampler (`sampling`) and the engines that run rollouts,
evaluations and the context engine's model calls through one interface (`engines`: HF, vLLM)."""
