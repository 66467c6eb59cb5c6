"""Ingest: read the raw UVH5 archive, group its subband files, convert groups to MSs."""
