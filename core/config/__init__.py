from tml.core.config.base_config import BaseConfig
