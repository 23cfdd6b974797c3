"""Layer 2, what one training run is made of: models, data, optimizers, learning-rate
schedules and the run configuration. Imports only the instrument below it."""
