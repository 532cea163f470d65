package io.camundarelay.engine;

import java.sql.Connection;
import java.sql.SQLException;
import java.sql.Statement;
import javax.sql.DataSource;
import org.camunda.bpm.engine.impl.cfg.AbstractProcessEnginePlugin;
import org.camunda.bpm.engine.impl.cfg.ProcessEngineConfigurationImpl;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.springframework.boot.context.event.ApplicationFailedEvent;
import org.springframework.boot.context.event.ApplicationReadyEvent;
import org.springframework.context.event.EventListener;
import org.springframework.stereotype.Component;

/**
 * One engine node at a time through its start on a shared PostgreSQL database.
 *
 * <p>Nodes started at once on an empty database would each create the schema (the second
 * fails on tables that appeared meanwhile), each deploy the seed process (two versions) and
 * each create the worker group and user ({@link WorkerAccess}). So before the engine touches
 * the database, this plugin takes a PostgreSQL session advisory lock on a connection of its
 * own and holds it until the application is ready: schema, deployment and identities are
 * done by one node after the other, and the later nodes find them made. A node that dies
 * while holding the lock drops its connection, and with it the lock. Other databases (the
 * embedded H2 default serves one node) take no lock.
 */
@Component
public class StartupLock extends AbstractProcessEnginePlugin {

  /** The advisory lock's key: "relay-st" in ASCII, unlikely to be used by anything else. */
  static final long KEY = 0x72656c61792d7374L;

  private static final Logger LOG = LoggerFactory.getLogger(StartupLock.class);

  private final DataSource dataSource;
  private Connection held;

  public StartupLock(DataSource dataSource) {
    this.dataSource = dataSource;
  }

  @Override
  public synchronized void preInit(ProcessEngineConfigurationImpl configuration) {
    try {
      Connection connection = dataSource.getConnection();
      if (!"PostgreSQL".equals(connection.getMetaData().getDatabaseProductName())) {
        connection.close();
        return;
      }
      try (Statement statement = connection.createStatement()) {
        if (!locked(statement, "SELECT pg_try_advisory_lock(" + KEY + ")")) {
          LOG.info("another engine node is starting on this database: waiting for it");
          statement.execute("SELECT pg_advisory_lock(" + KEY + ")");
        }
      }
      held = connection;
    } catch (SQLException e) {
      throw new IllegalStateException("cannot take the start lock on the database", e);
    }
  }

  @EventListener({ApplicationReadyEvent.class, ApplicationFailedEvent.class})
  public synchronized void release() {
    if (held == null) {
      return;
    }
    try (Connection connection = held;
        Statement statement = connection.createStatement()) {
      // Unlocked explicitly: closing a pooled connection keeps its session (and the lock).
      statement.execute("SELECT pg_advisory_unlock(" + KEY + ")");
    } catch (SQLException e) {
      LOG.warn("could not release the start lock: {}", e.getMessage());
    } finally {
      held = null;
    }
  }

  private static boolean locked(Statement statement, String query) throws SQLException {
    try (var result = statement.executeQuery(query)) {
      return result.next() && result.getBoolean(1);
    }
  }
}
