"""VM Recovery: image-level backup and recovery for VMware vSphere."""

__version__ = "0.1.0"
