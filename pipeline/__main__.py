"""`python -m pipeline` runs the same CLI as `churn`."""

from pipeline.cli import app

if __name__ == "__main__":
    app()
