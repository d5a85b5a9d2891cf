"""The snapshot store: HDF5 corpora of DFT frames, importers and streaming loaders."""
