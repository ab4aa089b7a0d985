-- Runs once, when the postgres volume is first initialised: MLflow gets its own database
-- (Optuna and MLflow both keep an alembic_version table, so they cannot share one).
CREATE DATABASE mlflow;
