"""Deployers (never shipped): AWS Lambda (`aws/`) and Modal (`modal_endpoint`), the record of what a deployment
made (`state`), the journal a failed deploy is undone from (`journal`) and what a deploy prints (`ui`)."""
