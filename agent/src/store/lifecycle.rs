//! The store's life cycle: tag, delete, prune, verify and disk accounting.
