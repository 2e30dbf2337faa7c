"""Modal screens: help and the fault-mode picker."""
