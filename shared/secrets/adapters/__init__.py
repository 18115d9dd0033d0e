"""The key-encryption key's adapters: key files in the data directory, Cloud KMS."""
