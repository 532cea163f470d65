package io.camundarelay.engine;

import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.SQLException;
import javax.sql.DataSource;
import org.camunda.bpm.engine.ProcessEngine;
import org.camunda.bpm.engine.impl.cfg.AbstractProcessEnginePlugin;
import org.camunda.bpm.engine.impl.cfg.ProcessEngineConfigurationImpl;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.springframework.core.Ordered;
import org.springframework.core.annotation.Order;
import org.springframework.stereotype.Component;

/**
 * One engine at a time creates or updates the schema on a shared PostgreSQL database.
 *
 * <p>Engines of one cluster started at once on an empty database would both run the schema's
 * {@code CREATE} statements, and the second fails on a duplicate key ({@code schema-update:
 * true} does not guard against a concurrent creator). Between the end of the configuration's
 * set-up (after the data source is known, before the schema operations) and the end of the
 * engine's build, this plugin holds a PostgreSQL session advisory lock on a connection of its
 * own; the other nodes wait for it, then find the schema made. A process that dies holding
 * it releases it with its session. Other databases (the embedded H2 file, one process only)
 * are left alone.
 */
@Component
@Order(Ordered.HIGHEST_PRECEDENCE)
public class SchemaLock extends AbstractProcessEnginePlugin {

  /** The advisory lock's two keys: "RELY" and "SCHM". */
  private static final int CLASS_ID = 0x52454C59;

  private static final int OBJECT_ID = 0x5343484D;

  private static final Logger LOG = LoggerFactory.getLogger(SchemaLock.class);

  private Connection held;

  @Override
  public void postInit(ProcessEngineConfigurationImpl configuration) {
    DataSource dataSource = configuration.getDataSource();
    if (dataSource == null) {
      return;
    }
    try {
      Connection connection = dataSource.getConnection();
      if (!"PostgreSQL".equals(connection.getMetaData().getDatabaseProductName())) {
        connection.close();
        return;
      }
      connection.setAutoCommit(true);
      try (PreparedStatement lock = connection.prepareStatement("SELECT pg_advisory_lock(?, ?)")) {
        lock.setInt(1, CLASS_ID);
        lock.setInt(2, OBJECT_ID);
        lock.execute();
      }
      held = connection;
      LOG.debug("holding the schema lock while the engine starts");
    } catch (SQLException error) {
      throw new IllegalStateException("cannot take the schema lock: " + error.getSQLState(), error);
    }
  }

  @Override
  public void postProcessEngineBuild(ProcessEngine engine) {
    Connection connection = held;
    held = null;
    if (connection == null) {
      return;
    }
    try (connection;
        PreparedStatement unlock = connection.prepareStatement("SELECT pg_advisory_unlock(?, ?)")) {
      unlock.setInt(1, CLASS_ID);
      unlock.setInt(2, OBJECT_ID);
      unlock.execute();
    } catch (SQLException error) {
      LOG.warn("releasing the schema lock failed ({}); closing the session releases it",
          error.getSQLState());
    }
  }
}
