"""Putting built artifacts on devices: Linux boards over SSH, microcontrollers via a bundle."""
