"""The reply job and its delivery: states (job), correlating (correlator), incidents, and
finding replies nobody will send (reconciler)."""
