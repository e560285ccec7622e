"""The dashboard's widgets; each one renders part of a snapshot."""
