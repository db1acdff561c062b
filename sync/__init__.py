"""MQTT sync between the cloud and the gates (Mosquitto brokers, paho-mqtt clients)."""
