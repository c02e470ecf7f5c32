"""Built-in dataset specs shipped with churnops."""
