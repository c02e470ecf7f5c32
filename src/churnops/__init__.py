"""churnops: the automated model lifecycle for churn prediction."""

__version__ = "0.1.0"
