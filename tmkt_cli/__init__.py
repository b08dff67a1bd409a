"""tmkt: spiking networks for event cameras, trained with knowledge from static images."""

__version__ = "0.1.0"
