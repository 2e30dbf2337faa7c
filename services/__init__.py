"""ticslab services: task server, balancer, client emulator and the local stack launcher."""

__version__ = "0.1.0"
