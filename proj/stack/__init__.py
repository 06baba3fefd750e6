"""The local stack: Redis, workers, Flower and the simulator as managed processes."""
