"""AWS Lambda deployments through the AWS APIs (boto3, imported lazily), and their CloudFormation export."""
