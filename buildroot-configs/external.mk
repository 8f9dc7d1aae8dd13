include $(sort $(wildcard $(BR2_EXTERNAL_NSG_PATH)/package/*/*.mk))
