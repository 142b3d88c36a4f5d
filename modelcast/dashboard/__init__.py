"""``modelcast dashboard``: the operator's web page over the coordinator's database."""
