"""Calling deployed or local functions (never shipped): function URLs over HTTP, SigV4 signing, direct Lambda
invokes, CloudWatch logs."""
