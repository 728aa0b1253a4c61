"""koaimg: knee cartilage thickness, MOAKS-style defects and longitudinal change from MRI and ultrasound."""

__version__ = "0.1.0"
