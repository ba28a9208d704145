"""Tests of the durable dirty journal."""
