"""Devices of a station: card reader, receipt printer, scanners. One small interface per kind, a real
driver and a simulator behind each, chosen by the station file or by detection."""
