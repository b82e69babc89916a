"""The guidance API: live parking, lockers and crowd levels; history and device health."""
