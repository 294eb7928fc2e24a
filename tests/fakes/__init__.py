"""In-memory stand-ins for the AWS clients the lifecycle uses, held to the real engines by tests/contract."""
