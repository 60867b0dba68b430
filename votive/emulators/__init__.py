"""Local emulators of AWS Lambda (build and test time; never shipped): a function URL in front of execution
environments run in this process or as processes behind an emulated Runtime API, and a Lambda-like folder tree
that runs built artifacts under the real awslambdaric."""
