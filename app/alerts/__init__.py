"""Monitoring alerts for operators: opened when a condition appears, closed when it clears."""
