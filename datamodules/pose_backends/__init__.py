"""Pose extractors behind :func:`datamodules.pose_extract.extract_poses`, one module per backend."""
