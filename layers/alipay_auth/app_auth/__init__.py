"""The authorization lifecycle for an Alipay ISV: links, callback, storage, rotation, revocation.

Knows DynamoDB, KMS, Secrets Manager, EventBridge and SQS through injected boto3 clients; knows
no HTTP framework. The wire protocol lives in ``alipay_v3``.
"""
