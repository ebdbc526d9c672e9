"""AWS through boto3: clients and errors, S3, SES (checks and an email notification block),
CloudWatch Logs.
"""
