"""Column names, formats and limits of the IoT temperature data: the one place they are defined.

The raw file is the Kaggle "Temperature Readings: IoT Devices" ``IOT-temp.csv``; its header is
``id,room_id/id,noted_date,temp,out/in`` and a row looks like
``__export__.temp_log_196134_bd201015,Room Admin,08-12-2018 09:30,29,In``. Everything in the raw
file is read as text; validation turns it into the *clean* (canonical) frame whose columns are
named by the ``CLEAN_*`` constants below.
"""

from __future__ import annotations

# --- raw file (IOT-temp.csv) ------------------------------------------------------------------
RAW_ID = "id"
RAW_ROOM = "room_id/id"
RAW_DATE = "noted_date"
RAW_TEMP = "temp"
RAW_LOCATION = "out/in"

#: The columns of the original file, in its order. All are required; others are ignored.
RAW_COLUMNS: tuple[str, ...] = (RAW_ID, RAW_ROOM, RAW_DATE, RAW_TEMP, RAW_LOCATION)

#: ``noted_date`` is day-first, minutes resolution: "08-12-2018 09:30" is 8 December 2018.
#: Parsing it month-first silently misreads every row whose day is 12 or less.
DATE_FORMAT = "%d-%m-%Y %H:%M"
#: The same layout for humans (used in messages).
DATE_LAYOUT = "DD-MM-YYYY HH:MM"
#: The month-first layout; only used to recognise (and refuse) month-first files.
MONTH_FIRST_FORMAT = "%m-%d-%Y %H:%M"

#: Plausible years of ``noted_date``, inclusive: a reading from before the Unix epoch or after
#: 2099 is a broken clock or export (and datetime64[ns] ends in 2262).
YEAR_MIN = 1970
YEAR_MAX = 2099

#: Values of ``out/in``: the sensor inside or outside the room.
LOCATIONS: tuple[str, ...] = ("In", "Out")

#: Prefix of the ids in the original export: ``__export__.temp_log_<number>_<8 hex digits>``.
ID_PREFIX = "__export__.temp_log_"

# --- clean (canonical) frame ------------------------------------------------------------------
CLEAN_ID = "id"  # str
CLEAN_ROOM = "room_id"  # str
CLEAN_TIME = "noted_at"  # datetime64[ns], naive local time as in the file
CLEAN_TEMP = "temp"  # float64, degrees Celsius
CLEAN_LOCATION = "location"  # "In" or "Out"

CLEAN_COLUMNS: tuple[str, ...] = (CLEAN_ID, CLEAN_ROOM, CLEAN_TIME, CLEAN_TEMP, CLEAN_LOCATION)
CLEAN_DTYPES: dict[str, str] = {
    CLEAN_ID: "str",
    CLEAN_ROOM: "str",
    CLEAN_TIME: "datetime64[ns]",
    CLEAN_TEMP: "float64",
    CLEAN_LOCATION: "str",
}
#: Raw column -> clean column.
RAW_TO_CLEAN: dict[str, str] = dict(zip(RAW_COLUMNS, CLEAN_COLUMNS, strict=True))

#: Two readings are the same reading (exported twice, whatever their ids) when these agree.
DUPLICATE_KEY: tuple[str, ...] = (CLEAN_ROOM, CLEAN_TIME, CLEAN_TEMP, CLEAN_LOCATION)

# --- plausibility -----------------------------------------------------------------------------
#: Plausible temperatures, °C, inclusive. The original file spans about 21..51 °C (an "Out" sensor
#: in Indian summer sun reaches 51). -30..70 covers any indoor or outdoor reading with margin, and
#: still refuses the values a broken sensor or export produces: 999/-999 placeholders, 85 (the
#: DS18B20's power-on reset value) and -127 (its "disconnected" value).
TEMP_MIN = -30.0
TEMP_MAX = 70.0
