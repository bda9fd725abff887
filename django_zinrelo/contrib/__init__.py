"""Ready integrations with shop frameworks; each is imported only by a shop that lists it."""
