"""`triage`: the command line over the `serving` and `training` packages."""
