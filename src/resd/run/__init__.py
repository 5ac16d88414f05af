"""A run's directory on disk: its logs, snapshots and summary (`rundir`) and its checkpoints
(`checkpoint`), written atomically so an interrupted run resumes exactly."""
