"""The labeling and retraining loop: Label Studio push/pull, reviewers' corrections, gated retraining,
the MLflow registry and serving from it. Depends on `training` and `serving`; neither depends on it."""
