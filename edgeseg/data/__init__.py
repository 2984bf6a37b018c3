"""Data in the Severstal layout: the reader and the synthetic strip generator are torch-free
(edgeseg.data.severstal, edgeseg.data.synth); the torch datasets live in edgeseg.data.datasets."""
